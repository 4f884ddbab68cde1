// A series' WADO-RS metadata: instances sorted along the slice normal, windows, image ids.

export type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

export interface SliceInfo {
  sopInstanceUid: string;
  /** The frame of the instance, from 1 (every frame of a multi-frame instance is a slice). */
  frame: number;
  imageId: string;
  metadata: DicomJson;
  position: number;
  window: { center: number; width: number } | null;
  rows: number;
  columns: number;
}

function first(ds: DicomJson, tag: string): unknown {
  return ds[tag]?.Value?.[0];
}

function numbers(ds: DicomJson, tag: string): number[] {
  return (ds[tag]?.Value ?? []).map((v) => Number(v));
}

/** The item of a functional group for one frame (per-frame first, then shared). */
function group(ds: DicomJson, frame: number, sequence: string): DicomJson | undefined {
  const perFrame = ds['52009230']?.Value?.[frame - 1] as DicomJson | undefined;
  const shared = ds['52009229']?.Value?.[0] as DicomJson | undefined;
  return (perFrame?.[sequence]?.Value?.[0] ?? shared?.[sequence]?.Value?.[0]) as DicomJson | undefined;
}

/** The slice normal's projection of ImagePositionPatient (InstanceNumber when absent). A
 * frame of a multi-frame instance uses its per-frame position, else its instance's plus a
 * small step per frame (frames stay in order within their instance). */
function position(ds: DicomJson, frame = 1): number {
  const iop = numbers(ds, '00200037').length === 6 ? numbers(ds, '00200037')
    : numbers(group(ds, frame, '00209116') ?? {}, '00200037');
  const own = numbers(group(ds, frame, '00209113') ?? {}, '00200032');
  const ipp = own.length === 3 ? own : numbers(ds, '00200032');
  const step = own.length === 3 ? 0 : (frame - 1) * 1e-3;
  if (iop.length === 6 && ipp.length === 3) {
    const [a = 0, b = 0, c = 0, d = 0, e = 0, f = 0] = iop;
    const n = [b * f - c * e, c * d - a * f, a * e - b * d];
    return (n[0] ?? 0) * (ipp[0] ?? 0) + (n[1] ?? 0) * (ipp[1] ?? 0) + (n[2] ?? 0) * (ipp[2] ?? 0) + step;
  }
  return Number(first(ds, '00200013') ?? 0) + (frame - 1) * 1e-3;
}

export interface LoadedSeries { slices: SliceInfo[]; metadata: Map<string, DicomJson> }

/** Fetches the metadata; slices in anatomical order (ascending along the normal), as the
 * findings' slice_index counts them. */
export async function loadSeries(studyUid: string, seriesUid: string): Promise<LoadedSeries> {
  const base = `/dicomweb/studies/${encodeURIComponent(studyUid)}/series/${encodeURIComponent(seriesUid)}`;
  const reply = await fetch(`${base}/metadata`, {
    credentials: 'same-origin', headers: { Accept: 'application/dicom+json' } });
  if (!reply.ok) throw new Error(`series metadata: HTTP ${reply.status}`);
  const instances = (await reply.json()) as DicomJson[];
  const metadata = new Map<string, DicomJson>();
  const slices: SliceInfo[] = [];
  for (const ds of instances) {
    const sop = String(first(ds, '00080018') ?? '');
    const frames = Math.max(1, Number(first(ds, '00280008') ?? 1) || 1);
    const uri = `${location.origin}${base}/instances/${encodeURIComponent(sop)}/frames/`;
    // The loader's metadata manager is given frame 1 and derives the other frames from it.
    metadata.set(`wadors:${uri}1`, ds);
    const center = Number(first(ds, '00281050'));
    const width = Number(first(ds, '00281051'));
    for (let frame = 1; frame <= frames; frame++) {
      slices.push({
        sopInstanceUid: sop, frame, imageId: `sidecar:wadors:${uri}${frame}`, metadata: ds,
        position: position(ds, frame),
        window: Number.isFinite(center) && Number.isFinite(width) && width > 0 ? { center, width } : null,
        rows: Number(first(ds, '00280010') ?? 0), columns: Number(first(ds, '00280011') ?? 0),
      });
    }
  }
  slices.sort((a, b) => a.position - b.position || a.frame - b.frame);
  return { slices, metadata };
}
