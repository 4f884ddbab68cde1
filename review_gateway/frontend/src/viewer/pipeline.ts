// The DICOM grayscale pipeline (PS3.3 C.11, PS3.14), done here rather than left to Cornerstone:
// stored value → Modality LUT (rescale, or the Modality LUT Sequence) → VOI (window with its
// VOI LUT Function LINEAR / LINEAR_EXACT / SIGMOID, or the VOI LUT Sequence) → presentation
// (MONOCHROME1 or Presentation LUT Shape INVERSE invert; IDENTITY does not) → 8-bit grey.
//
// Cornerstone 5.14 gets parts of this wrong or only on one rendering path (the CPU path never
// inverts MONOCHROME1 after resetProperties; SIGMOID and LUT sequences are GPU-only or CPU-only),
// so the viewer hands Cornerstone display values and an identity window (viewer.ts).

import type { DicomJson } from './series';

export type VoiFunction = 'LINEAR' | 'LINEAR_EXACT' | 'SIGMOID';

export interface Lut { first: number; bits: number; data: ArrayLike<number> }

/** One frame's grayscale transformations, as its (frame-combined) DICOM JSON states them. */
export interface Grayscale {
  slope: number;
  intercept: number;
  modalityLut: Lut | null;
  window: { center: number; width: number } | null;
  voiFunction: VoiFunction;
  voiLut: Lut | null;
  /** Presentation: low VOI output displayed bright. */
  inverse: boolean;
}

/** What the viewer applies now: the image's own VOI, or a window in modality units. */
export type Voi =
  | { kind: 'own' }
  | { kind: 'window'; center: number; width: number; fn: VoiFunction };

function first(ds: DicomJson, tag: string): unknown {
  return ds[tag]?.Value?.[0];
}

function num(ds: DicomJson, tag: string): number | null {
  const v = Number(first(ds, tag));
  return first(ds, tag) === undefined || !Number.isFinite(v) ? null : v;
}

function text(ds: DicomJson, tag: string): string {
  return String(first(ds, tag) ?? '').trim().toUpperCase();
}

type Entry = { vr: string; Value?: unknown[]; InlineBinary?: string };

function lutFrom(item: DicomJson | undefined, signed: boolean): Lut | null {
  if (!item) return null;
  const desc = (item['00283002']?.Value ?? []).map(Number);
  const [n0 = 0, f0 = 0, bits = 16] = desc;
  const entry = item['00283006'] as Entry | undefined;
  let data: ArrayLike<number> | null = null;
  if (entry?.Value?.length) data = entry.Value.map(Number);
  else if (entry?.InlineBinary) {
    const raw = atob(entry.InlineBinary);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    const n = n0 === 0 ? 65536 : n0;
    // LUT Data is OW (16-bit words) whatever the descriptor's bit depth; 8-bit LUTs sent as
    // OB (rare) hold one byte an entry.
    data = entry.vr === 'OB' || bytes.length === n ? bytes
      : new Uint16Array(bytes.buffer, 0, Math.floor(bytes.length / 2));
  }
  if (!data || data.length === 0) return null;
  // The first value mapped is US or SS; US holding a negative number (signed pixel data).
  const firstMapped = signed && f0 > 32767 ? f0 - 65536 : f0;
  return { first: firstMapped, bits: bits || 16, data };
}

/** The frame's grayscale transformations (per-frame functional groups already folded into
 * the frame's DICOM JSON by the loader's metadata manager). */
export function grayscaleOf(ds: DicomJson): Grayscale {
  const signed = num(ds, '00280103') === 1;
  const modalityItem = (ds['00283000']?.Value?.[0] ?? undefined) as DicomJson | undefined;
  const voiItem = (ds['00283010']?.Value?.[0] ?? undefined) as DicomJson | undefined;
  const center = num(ds, '00281050');
  const width = num(ds, '00281051');
  const fn = text(ds, '00281056');
  const photometric = text(ds, '00280004');
  const shape = text(ds, '20500020');
  return {
    slope: num(ds, '00281053') ?? 1,
    intercept: num(ds, '00281052') ?? 0,
    modalityLut: lutFrom(modalityItem, signed),
    window: center !== null && width !== null && width > 0 ? { center, width } : null,
    voiFunction: fn === 'SIGMOID' || fn === 'LINEAR_EXACT' ? fn : 'LINEAR',
    voiLut: lutFrom(voiItem, false),
    inverse: shape === 'INVERSE' ? true : shape === 'IDENTITY' ? false : photometric === 'MONOCHROME1',
  };
}

function lookup(lut: Lut, x: number): number {
  const i = Math.round(x) - lut.first;
  const n = lut.data.length;
  return Number(lut.data[i < 0 ? 0 : i >= n ? n - 1 : i]);
}

export function modalityValue(g: Grayscale, stored: number): number {
  return g.modalityLut ? lookup(g.modalityLut, stored) : stored * g.slope + g.intercept;
}

/** VOI output in [0, 1] for a window (PS3.3 C.11.2.1.2 and C.11.2.1.3). */
export function windowed(x: number, center: number, width: number, fn: VoiFunction): number {
  if (fn === 'SIGMOID') return 1 / (1 + Math.exp((-4 * (x - center)) / width));
  if (fn === 'LINEAR_EXACT') {
    if (x <= center - width / 2) return 0;
    if (x > center + width / 2) return 1;
    return (x - center) / width + 0.5;
  }
  if (width <= 1) return x <= center - 0.5 ? 0 : 1;
  if (x <= center - 0.5 - (width - 1) / 2) return 0;
  if (x > center - 0.5 + (width - 1) / 2) return 1;
  return (x - (center - 0.5)) / (width - 1) + 0.5;
}

/** The linear window a VOI LUT covers (its input range), for the info line and as the start
 * of a window drag. */
export function lutWindow(lut: Lut): { center: number; width: number } {
  const width = Math.max(1, lut.data.length);
  return { center: lut.first + width / 2, width };
}

/** The frame's own VOI as a function of the modality value (the first window with its VOI
 * LUT Function; without one the VOI LUT Sequence; without either the full range, as OHIF
 * does). */
function ownVoi(g: Grayscale, range: [number, number]): (x: number) => number {
  if (g.window) {
    const { center, width } = g.window;
    return (x) => windowed(x, center, width, g.voiFunction);
  }
  if (g.voiLut) {
    const lut = g.voiLut;
    const top = 2 ** lut.bits - 1;
    return (x) => lookup(lut, x) / top;
  }
  const [lo, hi] = range;
  const width = Math.max(1, hi - lo);
  return (x) => windowed(x, lo + width / 2, width, 'LINEAR_EXACT');
}

/** The own window the info line shows and a drag starts from. */
export function ownWindow(g: Grayscale, range: [number, number]): { center: number; width: number } {
  if (g.window) return g.window;
  if (g.voiLut) return lutWindow(g.voiLut);
  const width = Math.max(1, range[1] - range[0]);
  return { center: range[0] + width / 2, width };
}

type Pixels = ArrayLike<number>;

export interface Frame {
  stored: Pixels;
  grayscale: Grayscale;
  /** Smallest and largest modality values in the frame. */
  range: [number, number];
  /** Smallest stored value and whether every stored value is an integer (a table then). */
  storedMin: number;
  storedMax: number;
  integer: boolean;
}

export function frameOf(stored: Pixels, grayscale: Grayscale): Frame {
  let lo = Infinity;
  let hi = -Infinity;
  let integer = true;
  for (let i = 0; i < stored.length; i++) {
    const v = stored[i] as number;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (!(stored instanceof Int8Array || stored instanceof Uint8Array || stored instanceof Int16Array
    || stored instanceof Uint16Array || stored instanceof Int32Array || stored instanceof Uint32Array
    || stored instanceof Uint8ClampedArray)) integer = false;
  if (!Number.isFinite(lo)) { lo = 0; hi = 0; }
  const a = modalityValue(grayscale, lo);
  const b = modalityValue(grayscale, hi);
  let mlo = Math.min(a, b);
  let mhi = Math.max(a, b);
  if (grayscale.modalityLut) {
    // A LUT need not be monotonic: its range over the stored range.
    for (let v = Math.ceil(lo); v <= hi; v++) {
      const m = modalityValue(grayscale, v);
      if (m < mlo) mlo = m;
      if (m > mhi) mhi = m;
    }
  }
  return { stored, grayscale, range: [mlo, mhi], storedMin: lo, storedMax: hi, integer };
}

/** Writes the frame's display values (0-255, after presentation) into `out`. */
export function bake(frame: Frame, voi: Voi, invert: boolean, out: Uint8Array): void {
  const g = frame.grayscale;
  const f = voi.kind === 'own' ? ownVoi(g, frame.range)
    : (x: number) => windowed(x, voi.center, voi.width, voi.fn);
  const flip = g.inverse !== invert;
  const grey = (stored: number): number => {
    const y = Math.min(1, Math.max(0, f(modalityValue(g, stored))));
    return Math.round((flip ? 1 - y : y) * 255);
  };
  const src = frame.stored;
  const n = Math.min(src.length, out.length);
  const span = frame.storedMax - frame.storedMin;
  if (frame.integer && span <= 1 << 20) {
    const base = frame.storedMin;
    const table = new Uint8Array(span + 1);
    for (let i = 0; i <= span; i++) table[i] = grey(base + i);
    for (let i = 0; i < n; i++) out[i] = table[(src[i] as number) - base] as number;
  } else {
    for (let i = 0; i < n; i++) out[i] = grey(src[i] as number);
  }
}
