// The DICOM viewer: a Cornerstone3D stack viewport over WADO-RS frames, with window/level in
// modality units (HU for CT), presets, invert, zoom, pan, reset and image↔screen mapping.

import {
  Enums, RenderingEngine, imageLoader, init as coreInit, setUseCPURendering, utilities, type Types,
} from '@cornerstonejs/core';
import { init as loaderInit, wadors } from '@cornerstonejs/dicom-image-loader';
import type { DicomJson, SliceInfo } from './series';

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

let ready: Promise<void> | null = null;
function initOnce(): Promise<void> {
  ready ??= (async () => {
    coreInit();
    if (softwareGl()) { setUseCPURendering(true); renderPath = 'cpu'; }
    loaderInit({ maxWebWorkers: Math.max(1, Math.min(2, navigator.hardwareConcurrency || 1)) });
  })();
  return ready;
}

let engines = 0;

export class Viewer {
  private engine: RenderingEngine | null = null;
  private viewport: Types.IStackViewport | null = null;
  private slices: SliceInfo[] = [];
  private readonly listeners = new Set<() => void>();
  private invertOn = false;
  private windowNow: Window | null = null;
  private generation = 0;
  /** The slice on screen (the requested one may still be loading). */
  private shown = -1;
  private fitScale = 1;

  private readonly resizer = new ResizeObserver(() => this.resize());

  constructor(readonly element: HTMLDivElement) {
    // The stage's size changes with the layout (status lines, window size): the canvas
    // must follow, or drawn pixels and overlay coordinates drift apart.
    this.resizer.observe(element);
  }

  onRender(listener: () => void): void { this.listeners.add(listener); }

  async load(slices: SliceInfo[], metadata: Map<string, DicomJson>, index: number): Promise<void> {
    await initOnce();
    for (const [imageId, ds] of metadata) wadors.metaDataManager.add(imageId, ds as never);
    if (!this.engine) {
      this.engine = new RenderingEngine(`sidecar-${++engines}`);
      this.engine.enableElement({
        viewportId: 'main', type: Enums.ViewportType.STACK, element: this.element,
        defaultOptions: { background: [0, 0, 0] as Types.Point3 },
      });
      this.viewport = this.engine.getViewport('main') as Types.IStackViewport;
      this.element.addEventListener(Enums.Events.STACK_NEW_IMAGE, ((event: CustomEvent<{ imageIdIndex: number }>) => {
        this.shown = event.detail.imageIdIndex;
        this.element.dataset['slice'] = String(this.shown + 1);
      }) as EventListener);
      this.element.addEventListener(Enums.Events.IMAGE_RENDERED, () => {
        // The slice last drawn, for tests and the benchmark to wait on.
        this.element.dataset['rendered'] = String(this.shownIndex + 1);
        this.element.dataset['renderPath'] = renderPath;
        for (const listener of this.listeners) listener();
      });
    }
    this.slices = slices;
    this.shown = -1;
    this.invertOn = false;
    this.windowNow = null;
    const start = Math.max(0, Math.min(index, slices.length - 1));
    await this.vp().setStack(slices.map((s) => s.imageId), start);
    this.reset();
    void this.prefetch(++this.generation, start);
  }

  /** Loads the rest of the stack into the cache, nearest slices first, a few at a time. */
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
    await Promise.all([worker(), worker(), worker(), worker()]);
  }

  private vp(): Types.IStackViewport {
    if (!this.viewport) throw new Error('viewer not loaded');
    return this.viewport;
  }

  get loaded(): boolean { return this.viewport !== null && this.slices.length > 0; }
  get count(): number { return this.slices.length; }
  /** The requested slice (navigation steps from it). */
  get index(): number { return this.viewport ? this.viewport.getCurrentImageIdIndex() : 0; }
  /** The slice on screen: what the info line and the overlays describe. */
  get shownIndex(): number { return this.shown >= 0 ? this.shown : this.index; }
  get slice(): SliceInfo | undefined { return this.slices[this.shownIndex]; }
  get inverted(): boolean { return this.invertOn; }

  async setIndex(index: number): Promise<void> {
    if (!this.loaded) return;
    const clamped = Math.max(0, Math.min(index, this.slices.length - 1));
    if (clamped !== this.index) await this.vp().setImageIdIndex(clamped);
  }

  scroll(delta: number): Promise<void> { return this.setIndex(this.index + delta); }

  /** The displayed window in modality units. */
  get window(): Window {
    const range = this.vp().getProperties().voiRange;
    if (!range) return this.windowNow ?? { center: 0, width: 1 };
    return { center: (range.upper + range.lower) / 2, width: range.upper - range.lower };
  }

  setWindow(win: Window): void {
    const width = Math.max(1, win.width);
    this.windowNow = { center: win.center, width };
    this.vp().setProperties({ voiRange: { lower: win.center - width / 2, upper: win.center + width / 2 } });
    this.vp().render();
  }

  /** The image's own window (its first WindowCenter/Width), else the loader's default. */
  imageWindow(): Window | null { return this.slice?.window ?? null; }

  applyPreset(key: string): string | null {
    const preset = PRESETS.find((p) => p.key === key);
    if (!preset) return null;
    const win = preset.window ?? this.imageWindow();
    if (win) this.setWindow(win);
    else { this.vp().resetProperties(); this.vp().setProperties({ invert: this.invertOn }); this.vp().render(); }
    return preset.name;
  }

  toggleInvert(): void {
    this.invertOn = !this.invertOn;
    this.vp().setProperties({ invert: this.invertOn });
    this.vp().render();
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

  reset(): void {
    const vp = this.vp();
    vp.resetCamera();
    vp.resetProperties();
    this.fitScale = vp.getCamera().parallelScale ?? 1;
    this.invertOn = false;
    const own = this.imageWindow();
    if (own) this.setWindow(own);
    vp.render();
  }

  /** Centres the view on an image point (pixel-edge coordinates). */
  centreOn(x: number, y: number): void {
    const slice = this.slice;
    if (!slice) return;
    this.lookAt(utilities.imageToWorldCoords(slice.imageId, [x, y]) as Types.Point3);
  }

  /** Image pixel coordinates (0,0 = top-left corner of the first pixel) → CSS px in the element. */
  imageToCanvas(x: number, y: number): [number, number] | null {
    const slice = this.slice;
    if (!slice || !this.viewport) return null;
    const world = utilities.imageToWorldCoords(slice.imageId, [x, y]) as Types.Point3;
    const [cx = 0, cy = 0] = this.viewport.worldToCanvas(world);
    return [cx, cy];
  }

  canvasToImage(cx: number, cy: number): [number, number] | null {
    const slice = this.slice;
    if (!slice || !this.viewport) return null;
    const world = this.viewport.canvasToWorld([cx, cy] as Types.Point2);
    const [x = 0, y = 0] = utilities.worldToImageCoords(slice.imageId, world) ?? [];
    return [x, y];
  }

  resize(): void {
    if (!this.engine || !this.viewport) return;
    this.engine.resize(true, true);
    this.viewport.render();
  }

  destroy(): void {
    this.resizer.disconnect();
    this.generation++;
    this.engine?.destroy();
    this.engine = null;
    this.viewport = null;
  }
}
