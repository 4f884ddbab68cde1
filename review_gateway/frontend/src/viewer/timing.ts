// Where the viewer's time goes, as User Timing entries (visible in the browser's performance
// panel; bench/review.py reads them): marks on the way from a click to the first image, one
// `sidecar:frame` measure per frame loaded (fetch, decode, bake) and one `sidecar:slice`
// measure per slice shown (was it in the cache, waiting for it, drawing it).

/** `warm`: the worklist has loaded the study chunk and initialised the viewer (main.ts).
 * The first-image marks, in order: the study chunk loaded, the study and its findings
 * fetched, Cornerstone initialised, the series metadata fetched, the first frame baked,
 * the first image drawn. */
export type Step = 'warm' | 'chunk' | 'study' | 'findings' | 'init' | 'metadata' | 'first-frame' | 'first-render';

export function mark(step: Step): void {
  performance.mark(`sidecar:${step}`);
}

/** The frame's request: 300 frames of a CT outnumber the browser's default 250 entries. */
let sized = false;
function sizeBuffer(): void {
  if (sized) return;
  sized = true;
  performance.setResourceTimingBufferSize(5000);
}

export interface FrameTiming { url: string; requested: number; decoded: number; baked: number }

/** Records one frame's load: the HTTP exchange from the Resource Timing entry of its URL,
 * then reading and decoding the reply (on the main thread, or the loader's web worker), then
 * baking display values. */
export function frameLoaded(t: FrameTiming): void {
  const entries = performance.getEntriesByName(t.url, 'resource') as PerformanceResourceTiming[];
  const http = entries.length ? entries[entries.length - 1] : undefined;
  const fetched = http && http.responseEnd >= t.requested ? http.responseEnd : t.decoded;
  performance.measure('sidecar:frame', { start: t.requested, end: t.baked, detail: {
    queued: http ? Math.max(0, http.startTime - t.requested) : 0,
    fetch: http ? http.responseEnd - http.startTime : 0,
    decode: t.decoded - fetched, bake: t.baked - t.decoded } });
}

export function startFrames(): void { sizeBuffer(); }

export interface SliceTiming { index: number; cached: boolean; asked: number; shown: number; frame: number }

/** Records one slice shown: asked (a key, the wheel) → its image available (`wait`, zero
 * when it was in the cache) → drawn (`render`: the wait for the next animation frame, then
 * `draw`, the time inside that frame until Cornerstone said it rendered). */
export function sliceShown(t: SliceTiming): void {
  const now = performance.now();
  performance.measure('sidecar:slice', { start: t.asked, end: now, detail: {
    index: t.index, cached: t.cached, wait: t.shown - t.asked, render: now - t.shown,
    draw: t.frame > 0 ? now - t.frame : now - t.shown } });
}
