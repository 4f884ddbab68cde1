// A series' WADO-RS metadata: instances sorted along the slice normal, windows, image ids.

export type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

export interface SliceInfo {
  sopInstanceUid: string;
  imageId: string;
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

/** The slice normal's projection of ImagePositionPatient (InstanceNumber when absent). */
function position(ds: DicomJson): number {
  const iop = numbers(ds, '00200037');
  const ipp = numbers(ds, '00200032');
  if (iop.length === 6 && ipp.length === 3) {
    const [a = 0, b = 0, c = 0, d = 0, e = 0, f = 0] = iop;
    const n = [b * f - c * e, c * d - a * f, a * e - b * d];
    return (n[0] ?? 0) * (ipp[0] ?? 0) + (n[1] ?? 0) * (ipp[1] ?? 0) + (n[2] ?? 0) * (ipp[2] ?? 0);
  }
  return Number(first(ds, '00200013') ?? 0);
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
  const slices = instances.map((ds) => {
    const sop = String(first(ds, '00080018') ?? '');
    const imageId = `wadors:${location.origin}${base}/instances/${encodeURIComponent(sop)}/frames/1`;
    metadata.set(imageId, ds);
    const center = Number(first(ds, '00281050'));
    const width = Number(first(ds, '00281051'));
    return {
      sopInstanceUid: sop, imageId, position: position(ds),
      window: Number.isFinite(center) && Number.isFinite(width) && width > 0 ? { center, width } : null,
      rows: Number(first(ds, '00280010') ?? 0), columns: Number(first(ds, '00280011') ?? 0),
    };
  });
  slices.sort((a, b) => a.position - b.position);
  return { slices, metadata };
}
