// The DICOM viewer: a Cornerstone3D stack viewport over WADO-RS frames, with window/level in
// modality units (HU for CT), presets, invert, zoom, pan, reset and image↔screen mapping.
//
// Grey levels: Cornerstone draws what pipeline.ts computes. A `sidecar:` image loader fetches
// the WADO-RS frame (stored values, no pre-scaling; the dicom-image-loader decodes what is not
// uncompressed 16-bit grey) and hands Cornerstone 8-bit display values
// (modality LUT → VOI → presentation done here) with an identity window and no inversion, so
// the CPU path (headless, software GL) and the GPU path draw the same, correct image.

import {
  Enums, RenderingEngine, cache, eventTarget, imageLoader, init as coreInit, metaData, setUseCPURendering, utilities,
  type Types,
} from '@cornerstonejs/core';
import { createImage, decodeImageFrame, init as loaderInit, wadors } from '@cornerstonejs/dicom-image-loader';
import { bake, frameOf, grayscaleOf, ownWindow, type Frame, type Voi, type VoiFunction } from './pipeline';
import type { DicomJson, SliceInfo } from './series';
import { frameLoaded, mark, sliceShown, startFrames, type SliceTiming } from './timing';

export interface Window { center: number; width: number }

export const PRESETS: { key: string; name: string; window: Window | null }[] = [
  { key: '1', name: 'Lung', window: { center: -600, width: 1500 } },
  { key: '2', name: 'Mediastinum', window: { center: 40, width: 400 } },
  { key: '3', name: 'Bone', window: { center: 400, width: 1800 } },
  { key: '4', name: 'Brain', window: { center: 40, width: 80 } },
  { key: '5', name: 'Image', window: null },
];

/** True when WebGL is missing or a software rasteriser (SwiftShader, llvmpipe): then
 * Cornerstone's CPU path draws a 512² slice several times faster than software WebGL. */
function softwareGl(): boolean {
  const gl = document.createElement('canvas').getContext('webgl2');
  if (!gl) return true;
  const ext = gl.getExtension('WEBGL_debug_renderer_info');
  const renderer = String(ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER));
  gl.getExtension('WEBGL_lose_context')?.loseContext();
  return /swiftshader|llvmpipe|software/i.test(renderer);
}

export let renderPath = 'gpu';

const SCHEME = 'sidecar:';

/** What a viewer's grey frames are baked with now; `version` changes whenever it does. Each
 * viewer has its own (the current study and a prior beside it are windowed apart); versions
 * come from one counter, so two displays never share one. */
interface Display { voi: Voi; invert: boolean; version: number }
let versions = 0;
/** The display of each `sidecar:` image id: the viewer that last loaded it. */
const displays = new Map<string, Display>();
const fallback: Display = { voi: { kind: 'own' }, invert: false, version: 0 };
function displayOf(imageId: string): Display { return displays.get(imageId) ?? fallback; }

interface Baked { imageId: string; frame: Frame; out: Uint8Array; version: number; image: Types.IImage }
/** Grey frames by `sidecar:` image id (colour frames are not listed: nothing to bake). */
const baked = new Map<string, Baked>();

function rebake(entry: Baked): boolean {
  const display = displayOf(entry.imageId);
  if (entry.version === display.version) return false;
  bake(entry.frame, display.voi, display.invert, entry.out);
  entry.version = display.version;
  return true;
}

/** Uncompressed little-endian transfer syntaxes: a frame's bytes are its stored values. */
const NATIVE = new Set(['1.2.840.10008.1.2', '1.2.840.10008.1.2.1']);
const FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*';

/** The first part of a multipart/related reply: its Content-Type and its bytes. */
function firstPart(body: Uint8Array, contentType: string): { type: string; data: Uint8Array } {
  const boundary = /boundary="?([^";]+)"?/i.exec(contentType)?.[1];
  if (!boundary) throw new Error(`frame: no multipart boundary in ${contentType}`);
  const head = new TextDecoder('latin1').decode(body.subarray(0, Math.min(body.length, 4096)));
  const start = head.indexOf(`--${boundary}`);
  const end = head.indexOf('\r\n\r\n', start);
  if (start < 0 || end < 0) throw new Error('frame: malformed multipart reply');
  const type = /content-type:\s*([^\r\n]*)/i.exec(head.slice(start, end))?.[1] ?? '';
  // The part ends at the next delimiter ("\r\n--boundary"), searched from the end.
  const delimiter = Array.from(`\r\n--${boundary}`, (c) => c.charCodeAt(0));
  let stop = body.length - delimiter.length;
  search: for (; stop > end; stop--) {
    for (let k = 0; k < delimiter.length; k++) if (body[stop + k] !== delimiter[k]) continue search;
    break;
  }
  if (stop <= end) throw new Error('frame: multipart reply without its closing delimiter');
  return { type, data: body.subarray(end + 4, stop) };
}

/** The stored values of a 16-bit greyscale frame sent uncompressed, as the loader's worker
 * would give them, or null when the frame is anything else (the loader decodes those). */
function nativeGrey(data: Uint8Array, transferSyntax: string, ds: DicomJson | undefined,
                    rows: number, columns: number): Int16Array | Uint16Array | null {
  const value = (tag: string): unknown => ds?.[tag]?.Value?.[0];
  if (!NATIVE.has(transferSyntax) || Number(value('00280100')) !== 16
    || Number(value('00280002') ?? 1) !== 1
    || !String(value('00280004') ?? '').trim().startsWith('MONOCHROME')
    || data.byteLength !== rows * columns * 2) return null;
  // A view when the bytes lie on a 2-byte boundary, else a copy.
  const bytes = data.byteOffset % 2 ? data.slice() : data;
  return Number(value('00280103')) === 1
    ? new Int16Array(bytes.buffer, bytes.byteOffset, rows * columns)
    : new Uint16Array(bytes.buffer, bytes.byteOffset, rows * columns);
}

/** Fetches one WADO-RS frame. A 16-bit greyscale frame sent uncompressed is used as it is:
 * handing it to the loader's web worker (two copies of the frame and a retyping) took 27–35 ms
 * a frame on the bench (docs/speed.md, Session 9). Everything else goes to the loader. */
async function fetchFrame(inner: string, url: string): Promise<Types.IImage> {
  const reply = await fetch(url, { credentials: 'same-origin', headers: { Accept: FRAME_ACCEPT } });
  if (!reply.ok) throw new Error(`frame: HTTP ${reply.status}`);
  const { type, data } = firstPart(new Uint8Array(await reply.arrayBuffer()),
    reply.headers.get('content-type') ?? '');
  const transferSyntax = /transfer-syntax="?([0-9.]+)/i.exec(type)?.[1] ?? '1.2.840.10008.1.2';
  const ds = wadors.metaDataManager.get(inner) as DicomJson | undefined;
  const pixel = metaData.get('imagePixelModule', inner) as { rows?: number; columns?: number } | undefined;
  const rows = Number(pixel?.rows ?? 0);
  const columns = Number(pixel?.columns ?? 0);
  const stored = nativeGrey(data, transferSyntax, ds, rows, columns);
  const loaded = { transferSyntaxUID: transferSyntax, imageQualityStatus: Enums.ImageQualityStatus.FULL_RESOLUTION };
  if (!stored) {
    const image = await createImage(inner, data, transferSyntax, { preScale: { enabled: false } } as never);
    return Object.assign(image, loaded) as unknown as Types.IImage;
  }
  const plane = (metaData.get('imagePlaneModule', inner) ?? {}) as
    { rowPixelSpacing?: number; columnPixelSpacing?: number };
  // The fields of the loader's image that the viewer keeps (sidecarLoader replaces the rest).
  return {
    imageId: inner, rows, columns, width: columns, height: rows, color: false,
    rowPixelSpacing: plane.rowPixelSpacing, columnPixelSpacing: plane.columnPixelSpacing,
    calibration: metaData.get('calibrationModule', inner) ?? {}, decodeTimeInMS: 0,
    imageFrame: { rows, columns, samplesPerPixel: 1, photometricInterpretation: 'MONOCHROME2',
      pixelData: stored },
    getPixelData: () => stored, getCanvas: undefined, ...loaded,
  } as unknown as Types.IImage;
}

/** Loads the WADO-RS frame (stored values) and turns a grey one into display values. */
function sidecarLoader(imageId: string): { promise: Promise<Types.IImage> } {
  const inner = imageId.slice(SCHEME.length);
  const promise = (async () => {
    const requested = performance.now();
    const url = inner.slice('wadors:'.length);
    const raw = await fetchFrame(inner, url);
    const decoded = performance.now();
    if (raw.color) {
      frameLoaded({ url, requested, decoded, baked: decoded });
      return { ...raw, imageId } as Types.IImage;
    }
    const ds = wadors.metaDataManager.get(inner) as DicomJson | undefined;
    const stored = raw.voxelManager?.getScalarData() ?? raw.getPixelData();
    const frame = frameOf(stored as ArrayLike<number>, grayscaleOf(ds ?? {}));
    const out = new Uint8Array(raw.rows * raw.columns);
    const voxelManager = utilities.VoxelManager.createImageVoxelManager({
      scalarData: out, width: raw.columns, height: raw.rows, numberOfComponents: 1 });
    const image = {
      ...raw, imageId, dataType: 'Uint8Array', color: false, rgba: false, numberOfComponents: 1,
      preScale: undefined, isPreScaled: false, slope: 1, intercept: 0, invert: false,
      minPixelValue: 0, maxPixelValue: 255, windowCenter: 128, windowWidth: 256,
      voiLUTFunction: undefined, modalityLUT: undefined, voiLUT: undefined, floatPixelData: undefined,
      sizeInBytes: out.byteLength + (stored as ArrayLike<number> & { byteLength?: number }).byteLength!,
      voxelManager, getPixelData: () => out, cachedLut: undefined,
    } as unknown as Types.IImage;
    const entry: Baked = { imageId, frame, out, version: -1, image };
    rebake(entry);
    baked.set(imageId, entry);
    frameLoaded({ url, requested, decoded, baked: performance.now() });
    return image;
  })();
  return { promise };
}

/** Metadata for `sidecar:` ids: the frame's own, except that a grey frame is now 8-bit
 * MONOCHROME2 display values with no rescale and an identity window. */
function sidecarMetadata(type: string, imageId: string): unknown {
  if (typeof imageId !== 'string' || !imageId.startsWith(SCHEME)) return undefined;
  const inner = imageId.slice(SCHEME.length);
  const base = metaData.get(type, inner) as Record<string, unknown> | undefined;
  const ds = wadors.metaDataManager.get(inner) as DicomJson | undefined;
  const photometric = String(ds?.['00280004']?.Value?.[0] ?? 'MONOCHROME2').trim();
  if (!photometric.startsWith('MONOCHROME')) return base;
  switch (type) {
    case 'imagePixelModule':
      return { ...base, photometricInterpretation: 'MONOCHROME2', bitsAllocated: 8, bitsStored: 8,
        highBit: 7, pixelRepresentation: 0, smallestPixelValue: 0, largestPixelValue: 255 };
    case 'modalityLutModule':
      return { rescaleSlope: 1, rescaleIntercept: 0, rescaleType: undefined, modalityLUTSequence: undefined };
    case 'voiLutModule':
      return { windowCenter: [128], windowWidth: [256], voiLUTFunction: 'LINEAR', voiLUTSequence: undefined };
    case 'scalingModule':
      return undefined;
    default:
      return base;
  }
}

/** The identity window Cornerstone applies to display values on each path: the CPU path
 * uses the DICOM LINEAR formula over (center, width), the GPU path a ramp lower → upper. */
function identityRange(): Types.VOIRange {
  return renderPath === 'cpu' ? { lower: 0, upper: 256 } : { lower: 0, upper: 255 };
}

let ready: Promise<void> | null = null;
function initOnce(): Promise<void> {
  ready ??= (async () => {
    startFrames();
    coreInit();
    // `sidecar.renderPath` in localStorage ('cpu' or 'gpu') overrides the choice (tests run
    // the GPU path on software GL that way).
    const forced = window.localStorage.getItem('sidecar.renderPath');
    if (forced === 'cpu' || (forced !== 'gpu' && softwareGl())) {
      setUseCPURendering(true);
      renderPath = 'cpu';
    }
    loaderInit({ maxWebWorkers: Math.max(1, Math.min(2, navigator.hardwareConcurrency || 1)) });
    imageLoader.registerImageLoader(SCHEME.slice(0, -1), sidecarLoader as never);
    metaData.addProvider(sidecarMetadata as never, 20000);
    eventTarget.addEventListener(Enums.Events.IMAGE_CACHE_IMAGE_REMOVED, ((event: CustomEvent<{ imageId: string }>) => {
      baked.delete(event.detail.imageId);
    }) as EventListener);
  })();
  return ready;
}

/** Initialises Cornerstone ahead of the first study (the worklist calls it when idle), so
 * opening one does not pay for it. */
export async function warmViewer(): Promise<void> {
  await initOnce();
  // One tiny frame through each decode worker: the first real frame then costs what the
  // others do (its decode took about 85 ms against 35 without this; docs/speed.md, Session 9).
  const frame = { rows: 2, columns: 2, bitsAllocated: 16, bitsStored: 16, highBit: 15,
    pixelRepresentation: 0, samplesPerPixel: 1, photometricInterpretation: 'MONOCHROME2' };
  await Promise.all([0, 1].map(() => decodeImageFrame(frame as never, '1.2.840.10008.1.2.1',
    new Uint8Array(8), document.createElement('canvas'), { preScale: { enabled: false } }, {})
    .catch(() => undefined)));
}

let engines = 0;
/** Frames fetched at once by the prefetch. Six (a browser's connections to one HTTP/1.1
 * host) loaded no more frames a second than four on the bench: the gateway was the limit, and
 * each frame took twice as long (docs/speed.md, Session 9). */
const PREFETCH = 4;

export class Viewer {
  /** This viewer's window and inversion. */
  private readonly display: Display = { voi: { kind: 'own' }, invert: false, version: ++versions };
  private engine: RenderingEngine | null = null;
  private viewport: Types.IStackViewport | null = null;
  private slices: SliceInfo[] = [];
  private readonly listeners = new Set<() => void>();
  private generation = 0;
  /** The slice on screen (the requested one may still be loading). */
  private shown = -1;
  private fitScale = 1;
  /** Between a new stack's request and its first image: the old image is still on screen. */
  private loading = false;
  /** The slice asked for last and when (its `sidecar:slice` measure once drawn). */
  private asked: SliceTiming | null = null;
  /** Until the first image of a new stack is drawn (its `sidecar:first-render` mark). */
  private firstRender = false;

  private readonly resizer = new ResizeObserver(() => this.resize());

  constructor(readonly element: HTMLDivElement) {
    // The stage's size changes with the layout (status lines, window size): the canvas
    // must follow, or drawn pixels and overlay coordinates drift apart.
    this.resizer.observe(element.parentElement ?? element);
    this.fitElement();
  }

  /** Elements drawn over the image in its coordinates (the overlay): placed as the element. */
  private readonly followers: (HTMLElement | SVGElement)[] = [];

  follow(other: HTMLElement | SVGElement): void {
    this.followers.push(other);
    this.fitElement();
  }

  /** The element covers its container in whole device pixels, from a whole device pixel: a
   * fractional size would have the browser stretch the canvas (whole pixels), and a
   * fractional offset would have it snap the canvas half a pixel away from the overlays. */
  private fitElement(): void {
    const parent = this.element.parentElement;
    if (!parent) return;
    const box = parent.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const left = Math.ceil((box.left + window.scrollX) * dpr) / dpr - (box.left + window.scrollX);
    const top = Math.ceil((box.top + window.scrollY) * dpr) / dpr - (box.top + window.scrollY);
    const width = Math.max(1, Math.floor((box.width - left) * dpr) / dpr);
    const height = Math.max(1, Math.floor((box.height - top) * dpr) / dpr);
    for (const target of [this.element, ...this.followers]) {
      Object.assign(target.style, { left: `${left}px`, top: `${top}px`, width: `${width}px`,
        height: `${height}px`, right: 'auto', bottom: 'auto' });
    }
  }

  onRender(listener: () => void): void { this.listeners.add(listener); }

  async load(slices: SliceInfo[], metadata: Map<string, DicomJson>, index: number): Promise<void> {
    await initOnce();
    mark('init');
    for (const [imageId, ds] of metadata) wadors.metaDataManager.add(imageId, ds as never);
    if (!this.engine) {
      this.engine = new RenderingEngine(`sidecar-${++engines}`);
      this.engine.enableElement({
        viewportId: 'main', type: Enums.ViewportType.STACK, element: this.element,
        defaultOptions: { background: [0, 0, 0] as Types.Point3 },
      });
      this.viewport = this.engine.getViewport('main') as Types.IStackViewport;
      this.element.addEventListener(Enums.Events.STACK_NEW_IMAGE, ((event: CustomEvent<{ imageIdIndex: number; imageId: string }>) => {
        this.shown = event.detail.imageIdIndex;
        this.element.dataset['slice'] = String(this.shown + 1);
        if (this.loading) mark('first-frame');
        const asked = this.asked;
        if (asked && asked.index === this.shown && !asked.shown) {
          asked.shown = performance.now();
          // Queued before Cornerstone's own frame callback (it asks for one after this event):
          // when it runs, the frame that draws the slice has started.
          requestAnimationFrame(() => { asked.frame = performance.now(); });
        }
        // A frame cached under an older window: bake it before its first render.
        const entry = baked.get(event.detail.imageId);
        if (entry && rebake(entry)) this.pushPixels(entry.image);
      }) as EventListener);
      this.element.addEventListener(Enums.Events.IMAGE_RENDERED, () => {
        if (this.loading) return;
        const entry = baked.get(this.vp().getCurrentImageId() ?? '');
        if (entry && entry.version !== this.display.version) return; // a re-render follows
        // The slice last drawn, for tests and the benchmark to wait on.
        this.element.dataset['rendered'] = String(this.shownIndex + 1);
        this.element.dataset['renderPath'] = renderPath;
        this.element.dataset['displayVersion'] = String(this.display.version);
        this.element.dataset['series'] = String(this.slice?.metadata['0020000E']?.Value?.[0] ?? '');
        // Where the image lies on the canvas (CSS px: left, top, right, bottom), for tests.
        const slice = this.slice;
        const tl = slice && this.imageToCanvas(0, 0);
        const br = slice && this.imageToCanvas(slice.columns, slice.rows);
        if (tl && br) this.element.dataset['imageRect'] = [...tl, ...br].map((v) => v.toFixed(2)).join(',');
        if (this.firstRender) { this.firstRender = false; mark('first-render'); }
        const asked = this.asked;
        if (asked?.shown && asked.index === this.shownIndex) { sliceShown(asked); this.asked = null; }
        for (const listener of this.listeners) listener();
      });
    }
    this.slices = slices;
    for (const s of slices) displays.set(s.imageId, this.display);
    this.shown = -1;
    this.loading = true;
    this.firstRender = true;
    this.asked = null;
    this.display.voi = { kind: 'own' };
    this.display.invert = false;
    this.display.version = ++versions;
    this.element.dataset['displayWanted'] = String(this.display.version);
    const start = Math.max(0, Math.min(index, slices.length - 1));
    try {
      await this.vp().setStack(slices.map((s) => s.imageId), start);
    } finally {
      this.loading = false;
    }
    this.reset();
    void this.prefetch(++this.generation, start);
  }

  /** Loads the rest of the stack into the cache, nearest slices first, PREFETCH at a time. */
  private async prefetch(generation: number, start: number): Promise<void> {
    const order = this.slices.map((s, i) => ({ id: s.imageId, d: Math.abs(i - start) }))
      .sort((a, b) => a.d - b.d).map((x) => x.id);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (generation === this.generation && next < order.length) {
        const imageId = order[next++] as string;
        await imageLoader.loadAndCacheImage(imageId).catch(() => undefined);
      }
    };
    await Promise.all(Array.from({ length: PREFETCH }, worker));
  }

  private vp(): Types.IStackViewport {
    if (!this.viewport) throw new Error('viewer not loaded');
    return this.viewport;
  }

  /** Hands re-baked display values of the frame on screen to Cornerstone. */
  private pushPixels(image: Types.IImage): void {
    const vp = this.vp() as unknown as { cpuRenderingInvalidated: boolean;
      getImageData(): { imageData?: unknown } | undefined };
    if (renderPath === 'cpu') vp.cpuRenderingInvalidated = true;
    else {
      const data = vp.getImageData()?.imageData as { getPointData?: unknown } | undefined;
      if (data?.getPointData) utilities.updateVTKImageDataWithCornerstoneImage(data as never, image);
    }
  }

  /** Changes what frames are baked with and redraws the frame on screen. */
  private setDisplay(voi: Voi, invert: boolean): void {
    this.display.voi = voi;
    this.display.invert = invert;
    this.display.version = ++versions;
    // What is asked for (data-display-version says what was drawn), for tests.
    this.element.dataset['displayWanted'] = String(this.display.version);
    if (!this.viewport) return;
    const entry = baked.get(this.viewport.getCurrentImageId() ?? '');
    if (entry && rebake(entry)) this.pushPixels(entry.image);
    else if (!entry && this.isColour()) this.viewport.setProperties({ invert });
    this.viewport.render();
  }

  private isColour(): boolean {
    const ds = this.slice?.metadata;
    const photometric = String(ds?.['00280004']?.Value?.[0] ?? 'MONOCHROME2');
    return !photometric.startsWith('MONOCHROME');
  }

  /** Cornerstone's own window and inversion: identity (the display values are final). */
  private identity(): void {
    this.vp().setProperties({ voiRange: identityRange(), invert: false });
  }

  private current(): Baked | undefined {
    return this.viewport ? baked.get(this.viewport.getCurrentImageId() ?? '') : undefined;
  }

  get loaded(): boolean { return this.viewport !== null && this.slices.length > 0; }
  get count(): number { return this.slices.length; }
  /** The requested slice (navigation steps from it). */
  get index(): number { return this.viewport ? this.viewport.getCurrentImageIdIndex() : 0; }
  /** The slice on screen: what the info line and the overlays describe. */
  get slice(): SliceInfo | undefined { return this.slices[this.shownIndex]; }
  get shownIndex(): number { return this.shown >= 0 ? this.shown : this.index; }
  /** Inverted relative to the image's correct presentation (the I key). */
  get inverted(): boolean { return this.display.invert; }

  async setIndex(index: number): Promise<void> {
    if (!this.loaded) return;
    const clamped = Math.max(0, Math.min(index, this.slices.length - 1));
    if (clamped === this.index) return;
    const imageId = this.slices[clamped]?.imageId ?? '';
    this.asked = { index: clamped, cached: cache.isLoaded(imageId), asked: performance.now(), shown: 0, frame: 0 };
    await this.vp().setImageIdIndex(clamped);
  }

  scroll(delta: number): Promise<void> { return this.setIndex(this.index + delta); }

  /** The displayed window in modality units (for a VOI LUT, the range it covers). */
  get window(): Window {
    if (this.display.voi.kind === 'window') return { center: this.display.voi.center, width: this.display.voi.width };
    return this.imageWindow() ?? { center: 0, width: 1 };
  }

  /** The VOI LUT Function a window applies: the image's own (SIGMOID stays SIGMOID), as
   * Cornerstone/OHIF keep it when a preset or a drag changes the window. */
  private voiFunction(): VoiFunction {
    return this.current()?.frame.grayscale.voiFunction ?? 'LINEAR';
  }

  setWindow(win: Window): void {
    const width = Math.max(1, win.width);
    this.setDisplay({ kind: 'window', center: win.center, width, fn: this.voiFunction() }, this.display.invert);
  }

  /** The image's own window (its first WindowCenter/Width, else its VOI LUT's range, else
   * its full range). */
  imageWindow(): Window | null {
    const entry = this.current();
    if (entry) return ownWindow(entry.frame.grayscale, entry.frame.range);
    return this.slice?.window ?? null;
  }

  applyPreset(key: string): string | null {
    const preset = PRESETS.find((p) => p.key === key);
    if (!preset) return null;
    if (preset.window) this.setWindow(preset.window);
    else this.setDisplay({ kind: 'own' }, this.display.invert);
    return preset.name;
  }

  toggleInvert(): void {
    this.setDisplay(this.display.voi, !this.display.invert);
  }

  /** Zoom relative to the image fitted in the viewport (camera parallel scale). */
  get zoom(): number {
    const scale = this.vp().getCamera().parallelScale;
    return scale ? this.fitScale / scale : 1;
  }

  zoomBy(factor: number): void {
    const vp = this.vp();
    const scale = vp.getCamera().parallelScale ?? this.fitScale;
    const next = Math.min(this.fitScale / 0.1, Math.max(this.fitScale / 20, scale / factor));
    vp.setCamera({ parallelScale: next });
    vp.render();
  }

  /** Moves the image by (dx, dy) CSS px on screen. */
  panBy(dx: number, dy: number): void {
    const rect = this.element.getBoundingClientRect();
    this.lookAt(this.vp().canvasToWorld([rect.width / 2 - dx, rect.height / 2 - dy] as Types.Point2));
  }

  /** Puts a world point at the centre of the viewport (GPU and CPU paths alike). */
  private lookAt(world: Types.Point3): void {
    const vp = this.vp();
    const { focalPoint, position } = vp.getCamera();
    if (!focalPoint || !position) return;
    const d = [world[0] - focalPoint[0], world[1] - focalPoint[1], world[2] - focalPoint[2]];
    vp.setCamera({ focalPoint: world,
      position: [position[0] + (d[0] ?? 0), position[1] + (d[1] ?? 0), position[2] + (d[2] ?? 0)] as Types.Point3 });
    vp.render();
  }

  /** The parallel scale that fits the whole image, on the GPU path: Cornerstone's own fit
   * (at reset and after a resize) may fit the image's height where its width overflows the
   * viewport (seen with 160 × 128 in a 920 × 750 viewport). The CPU path fits right. */
  private gpuFitScale(): number | null {
    if (renderPath !== 'gpu') return null;
    const data = this.viewport?.getImageData() as
      { dimensions?: ArrayLike<number>; spacing?: ArrayLike<number> } | undefined;
    const { clientWidth: w, clientHeight: h } = this.element;
    if (!data?.dimensions || !data.spacing || !w || !h) return null;
    const width = Number(data.dimensions[0]) * (Number(data.spacing[0]) || 1);
    const height = Number(data.dimensions[1]) * (Number(data.spacing[1]) || 1);
    return Math.max(height, (width * h) / w) / 2;
  }

  reset(): void {
    const vp = this.vp();
    vp.resetCamera();
    const fit = this.gpuFitScale();
    if (fit) vp.setCamera({ parallelScale: fit });
    vp.resetProperties();
    this.identity();
    this.fitScale = vp.getCamera().parallelScale ?? 1;
    this.setDisplay({ kind: 'own' }, false);
  }

  /** Centres the view on an image point (pixel-edge coordinates). */
  centreOn(x: number, y: number): void {
    const world = this.imageToWorld(x, y);
    if (world) this.lookAt(world);
  }

  /** The frame on screen's geometry as the viewport itself holds it (origin, row and column
   * directions, horizontal and vertical spacing). Cornerstone's imageToWorldCoords is not
   * used: it takes PixelSpacing's row spacing for the horizontal axis (wrong for non-square
   * pixels), and its half-pixel convention is the GPU path's, not the CPU path's. */
  private geometry(): { origin: number[]; i: number[]; j: number[]; sx: number; sy: number;
    edge: number } | null {
    const data = this.viewport?.getImageData() as
      { origin?: ArrayLike<number>; direction?: ArrayLike<number>; spacing?: ArrayLike<number> } | undefined;
    if (!data?.origin || !data.direction || !data.spacing) return null;
    const d = Array.from(data.direction);
    return {
      origin: Array.from(data.origin), i: d.slice(0, 3), j: d.slice(3, 6),
      sx: Number(data.spacing[0]) || 1, sy: Number(data.spacing[1]) || 1,
      // The GPU path's origin is the first pixel's centre; the CPU path maps the origin to
      // the first pixel's corner.
      edge: renderPath === 'cpu' ? 0 : 0.5,
    };
  }

  private imageToWorld(x: number, y: number): Types.Point3 | null {
    const g = this.geometry();
    if (!g) return null;
    const u = (x - g.edge) * g.sx;
    const v = (y - g.edge) * g.sy;
    return [0, 1, 2].map((k) => (g.origin[k] ?? 0) + u * (g.i[k] ?? 0) + v * (g.j[k] ?? 0)) as Types.Point3;
  }

  /** Image pixel coordinates (0,0 = top-left corner of the first pixel) → CSS px in the element. */
  imageToCanvas(x: number, y: number): [number, number] | null {
    if (!this.slice || !this.viewport) return null;
    const world = this.imageToWorld(x, y);
    if (!world) return null;
    const [cx = 0, cy = 0] = this.viewport.worldToCanvas(world);
    return [cx, cy];
  }

  canvasToImage(cx: number, cy: number): [number, number] | null {
    const g = this.geometry();
    if (!this.slice || !this.viewport || !g) return null;
    const world = this.viewport.canvasToWorld([cx, cy] as Types.Point2);
    const diff = [0, 1, 2].map((k) => (world[k] ?? 0) - (g.origin[k] ?? 0));
    const dot = (a: number[]): number => diff.reduce((sum, v, k) => sum + v * (a[k] ?? 0), 0);
    return [dot(g.i) / g.sx + g.edge, dot(g.j) / g.sy + g.edge];
  }

  resize(): void {
    this.fitElement();
    if (!this.engine || !this.viewport) return;
    const zoom = this.zoom;
    this.engine.resize(true, true);
    const fit = this.gpuFitScale();
    if (fit) {
      this.fitScale = fit;
      this.viewport.setCamera({ parallelScale: fit / zoom });
    }
    this.viewport.render();
  }

  /** Fits the whole image in the viewport again after a layout change (a second viewport
   * opened or closed beside it), keeping the window, slice and inversion; the zoom is 100 %. */
  fit(): void {
    this.fitElement();
    if (!this.engine || !this.viewport) return;
    this.engine.resize(true, false);
    const vp = this.vp();
    vp.resetCamera();
    const fit = this.gpuFitScale();
    if (fit) vp.setCamera({ parallelScale: fit });
    this.fitScale = vp.getCamera().parallelScale ?? 1;
    vp.render();
  }

  destroy(): void {
    this.resizer.disconnect();
    this.generation++;
    this.engine?.destroy();
    this.engine = null;
    this.viewport = null;
  }
}
