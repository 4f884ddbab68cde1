// Finding overlays on the viewer (SVG in screen space, recomputed from image pixels at every
// render so they stay on the right pixels at any zoom/pan), box editing and box drawing.

import type { Finding } from '../api';
import { svg } from '../dom';
import type { Viewer } from './viewer';

export type Box = [number, number, number, number];

export function currentBox(f: Finding): Box | null {
  const b = f.current?.bbox_px ?? f.bbox_px;
  return b && b.length === 4 ? [b[0] ?? 0, b[1] ?? 0, b[2] ?? 0, b[3] ?? 0] : null;
}

/** The frame a finding is on (from 1; single-frame findings may say 0). */
export function findingFrame(f: Finding): number { return Math.max(1, f.frame || 1); }

export function currentLabel(f: Finding): string { return f.current?.label || f.label; }

type Handle = 'n' | 's' | 'e' | 'w' | 'ne' | 'nw' | 'se' | 'sw';
const HANDLES: Handle[] = ['n', 's', 'e', 'w', 'ne', 'nw', 'se', 'sw'];

interface Drag { id: string | null; handle: Handle | 'new'; start: [number, number]; box: Box }

export class Overlay {
  readonly root: SVGSVGElement;
  private findings: Finding[] = [];
  private visible = new Set<string>();
  private selected: string | null = null;
  private editable = true;
  private drag: Drag | null = null;
  drawing = false;
  onEdited: (id: string, box: Box) => void = () => undefined;
  onDrawn: (box: Box) => void = () => undefined;

  constructor(private readonly viewer: Viewer, container: HTMLElement) {
    this.root = svg('svg', { class: 'overlay', 'data-testid': 'overlay' });
    container.appendChild(this.root);
    viewer.follow(this.root);
    viewer.onRender(() => this.draw());
    this.root.addEventListener('pointerdown', (e) => this.pointerDown(e));
    window.addEventListener('pointermove', this.move);
    window.addEventListener('pointerup', this.up);
  }

  destroy(): void {
    window.removeEventListener('pointermove', this.move);
    window.removeEventListener('pointerup', this.up);
  }

  set(findings: Finding[], visible: Set<string>, selected: string | null, editable: boolean): void {
    this.findings = findings;
    this.visible = visible;
    this.selected = selected;
    this.editable = editable;
    this.draw();
  }

  private local(e: PointerEvent): [number, number] {
    const rect = this.root.getBoundingClientRect();
    return [e.clientX - rect.left, e.clientY - rect.top];
  }

  private pointerDown(e: PointerEvent): void {
    const target = e.target as SVGElement;
    const handle = target.getAttribute('data-handle') as Handle | null;
    const id = target.getAttribute('data-finding');
    const point = this.local(e);
    const image = this.viewer.canvasToImage(point[0], point[1]);
    if (!image) return;
    if (handle && id) {
      const f = this.findings.find((x) => x.id === id);
      const box = f && currentBox(f);
      if (!box) return;
      this.drag = { id, handle, start: image, box: [...box] as Box };
    } else if (this.drawing) {
      const slice = this.viewer.slice;
      const x = Math.max(0, Math.min(slice?.columns || image[0], image[0]));
      const y = Math.max(0, Math.min(slice?.rows || image[1], image[1]));
      this.drag = { id: null, handle: 'new', start: [x, y], box: [x, y, x, y] };
    } else {
      return;
    }
    e.preventDefault();
    e.stopPropagation();
  }

  private readonly move = (e: PointerEvent): void => {
    if (!this.drag) return;
    const [cx, cy] = this.local(e);
    const image = this.viewer.canvasToImage(cx, cy);
    if (!image) return;
    const d = this.drag;
    const b = d.box;
    const slice = this.viewer.slice;
    const clampX = (v: number): number => Math.max(0, Math.min(slice?.columns || v, v));
    const clampY = (v: number): number => Math.max(0, Math.min(slice?.rows || v, v));
    const x = clampX(image[0]);
    const y = clampY(image[1]);
    if (d.handle === 'new') {
      b[0] = Math.min(d.start[0], x); b[2] = Math.max(d.start[0], x);
      b[1] = Math.min(d.start[1], y); b[3] = Math.max(d.start[1], y);
    } else {
      if (d.handle.includes('w')) b[0] = Math.min(x, b[2] - 1);
      if (d.handle.includes('e')) b[2] = Math.max(x, b[0] + 1);
      if (d.handle.includes('n')) b[1] = Math.min(y, b[3] - 1);
      if (d.handle.includes('s')) b[3] = Math.max(y, b[1] + 1);
    }
    this.draw();
  };

  private readonly up = (): void => {
    const d = this.drag;
    if (!d) return;
    this.drag = null;
    const box = d.box.map((v) => Math.round(v * 10) / 10) as Box;
    if (d.handle === 'new') {
      this.drawing = false;
      if (box[2] - box[0] >= 2 && box[3] - box[1] >= 2) this.onDrawn(box);
    } else if (d.id) {
      this.onEdited(d.id, box);
    }
    this.draw();
  };

  private rect(box: Box, cls: string, id: string | null): SVGGElement {
    const g = svg('g', { class: cls });
    const p0 = this.viewer.imageToCanvas(box[0], box[1]);
    const p1 = this.viewer.imageToCanvas(box[2], box[3]);
    if (!p0 || !p1) return g;
    const x = Math.min(p0[0], p1[0]);
    const y = Math.min(p0[1], p1[1]);
    const w = Math.abs(p1[0] - p0[0]);
    const h = Math.abs(p1[1] - p0[1]);
    g.appendChild(svg('rect', { x, y, width: w, height: h, class: 'box',
      ...(id ? { 'data-finding': id } : {}) }));
    if (id && cls.includes('selected') && this.editable) {
      const spots: Record<Handle, [number, number]> = {
        n: [x + w / 2, y], s: [x + w / 2, y + h], e: [x + w, y + h / 2], w: [x, y + h / 2],
        ne: [x + w, y], nw: [x, y], se: [x + w, y + h], sw: [x, y + h],
      };
      for (const handle of HANDLES) {
        const [hx, hy] = spots[handle];
        g.appendChild(svg('rect', { x: hx - 5, y: hy - 5, width: 10, height: 10,
          class: `handle h-${handle}`, 'data-handle': handle, 'data-finding': id }));
      }
    }
    return g;
  }

  draw(): void {
    const root = this.root;
    while (root.firstChild) root.removeChild(root.firstChild);
    const slice = this.viewer.slice;
    if (!slice) return;
    for (const f of this.findings) {
      if (!this.visible.has(f.id) || f.sop_instance_uid !== slice.sopInstanceUid
          || findingFrame(f) !== slice.frame) continue;
      const selected = f.id === this.selected;
      const cls = `finding ${f.origin === 'radiologist' ? 'own' : 'ai'}${selected ? ' selected' : ''}`
        + (f.decision?.action === 'reject' ? ' rejected' : '');
      const box = this.drag?.id === f.id ? this.drag.box : currentBox(f);
      const g = svg('g', { class: cls, 'data-finding': f.id });
      if (f.kind === 'mask' && f.points_px.length >= 6) {
        const pts: string[] = [];
        for (let i = 0; i + 1 < f.points_px.length; i += 2) {
          const p = this.viewer.imageToCanvas(f.points_px[i] ?? 0, f.points_px[i + 1] ?? 0);
          if (p) pts.push(`${p[0]},${p[1]}`);
        }
        g.appendChild(svg('polygon', { points: pts.join(' '), class: 'mask' }));
      } else {
        for (let i = 0; i + 1 < f.points_px.length; i += 2) {
          const p = this.viewer.imageToCanvas(f.points_px[i] ?? 0, f.points_px[i + 1] ?? 0);
          if (p) g.appendChild(svg('circle', { cx: p[0], cy: p[1], r: 4, class: 'point' }));
        }
      }
      if (box) {
        g.appendChild(this.rect(box, cls, f.id));
        const tl = this.viewer.imageToCanvas(box[0], box[1]);
        if (tl) {
          const text = svg('text', { x: tl[0], y: tl[1] - 4, class: 'label' });
          text.textContent = currentLabel(f);
          g.appendChild(text);
        }
      }
      root.appendChild(g);
    }
    if (this.drag?.handle === 'new') root.appendChild(this.rect(this.drag.box, 'drawing', null));
  }
}
