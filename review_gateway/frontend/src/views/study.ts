// The study view: patient banner, series thumbnails, the viewer with overlays, findings.

import { api, ApiError, type Finding, type Prior, type Series, type StudyDetail } from '../api';
import { clear, el, kbd, typing } from '../dom';
import { currentBox, findingFrame, Overlay, type Box } from '../viewer/overlay';
import { loadSeries, type LoadedSeries } from '../viewer/series';
import { mark } from '../viewer/timing';
import { PRESETS, Viewer } from '../viewer/viewer';

export { warmViewer } from '../viewer/viewer';
import { ChatPanel } from './chat';
import { DraftPanel } from './draft';
import { FindingsPanel } from './findings';
import { priorDate, PriorsPanel } from './priors';
import { header } from './header';
import { patientName } from './worklist';

const OHIF_META = 'sidecar-ohif-url';

/** The OHIF viewer's origin (the gateway names it in a meta tag), or null. */
function ohifBase(): string | null {
  return document.querySelector<HTMLMetaElement>(`meta[name="${OHIF_META}"]`)?.content || null;
}

/** Opens the study in OHIF with a one-time code (never the session token): the viewer
 * exchanges the code for a read-only DICOMweb token of this one study. */
async function openInOhif(studyId: string): Promise<void> {
  const base = ohifBase();
  if (!base) return;
  const handover = await api.viewerHandover(studyId);
  const url = new URL('/viewer', base);
  url.searchParams.set('StudyInstanceUIDs', handover.study_instance_uid);
  url.searchParams.set('code', handover.code);
  window.open(url.toString(), '_blank', 'noopener,noreferrer');
}

/** Series the sidecar wrote itself (its AI results) and other non-image objects. */
const RESULT_KIND: Record<string, string> = { SR: 'Structured report', SEG: 'Segmentation',
  KO: 'Key objects', PR: 'Presentation state' };
function isResult(series: Series): boolean {
  return series.derived || series.modality in RESULT_KIND;
}

/** Mouse on a viewport: drag = window/level, shift+drag or middle = pan, ctrl+drag or right =
 * zoom, wheel on the stage = scroll (ctrl+wheel = zoom). `blocked` pauses it (box drawing). */
function pointerControls(current: () => Viewer | null, viewportEl: HTMLElement, stage: HTMLElement,
                         blocked: () => boolean, windowed: () => void): void {
  let drag: { x: number; y: number; mode: 'wl' | 'pan' | 'zoom' } | null = null;
  viewportEl.addEventListener('contextmenu', (e) => e.preventDefault());
  viewportEl.addEventListener('pointerdown', (e) => {
    if (!current()?.loaded || blocked()) return;
    viewportEl.focus();
    const mode = e.button === 1 || e.shiftKey ? 'pan' : e.button === 2 || e.ctrlKey ? 'zoom' : 'wl';
    drag = { x: e.clientX, y: e.clientY, mode };
    viewportEl.setPointerCapture(e.pointerId);
    e.preventDefault();
  });
  viewportEl.addEventListener('pointermove', (e) => {
    const viewer = current();
    if (!drag || !viewer?.loaded) return;
    const dx = e.clientX - drag.x;
    const dy = e.clientY - drag.y;
    drag.x = e.clientX;
    drag.y = e.clientY;
    if (drag.mode === 'wl') {
      // Sensitivity in real units: a window's width per 500 px, at least 1 unit per pixel.
      const w = viewer.window;
      const k = Math.max(1, w.width / 500);
      viewer.setWindow({ center: w.center + dy * k, width: w.width + dx * k });
      windowed();
    } else if (drag.mode === 'pan') {
      viewer.panBy(dx, dy);
    } else {
      viewer.zoomBy(Math.exp(-dy / 200));
    }
  });
  const endDrag = (): void => { drag = null; };
  viewportEl.addEventListener('pointerup', endDrag);
  viewportEl.addEventListener('pointercancel', endDrag);
  stage.addEventListener('wheel', (e) => {
    const viewer = current();
    if (!viewer?.loaded) return;
    e.preventDefault();
    if (e.ctrlKey) viewer.zoomBy(e.deltaY < 0 ? 1.1 : 1 / 1.1);
    else void viewer.scroll(e.deltaY > 0 ? 1 : -1);
  }, { passive: false });
}

export function renderStudy(root: HTMLElement, studyId: string,
                            navigate: (hash: string) => void): () => void {
  const banner = el('section', { class: 'banner', 'aria-label': 'Patient and study' });
  const seriesList = el('nav', { class: 'series', 'aria-label': 'Series' });
  const stage = el('div', { class: 'stage' });
  const viewportEl = el('div', { class: 'viewport', 'data-testid': 'viewport', tabindex: 0 });
  const info = el('div', { class: 'info', 'data-testid': 'viewer-info' });
  const notice = el('div', { class: 'not-diagnostic', text: 'Review aid — not for primary diagnosis' });
  const state = el('p', { class: 'status', role: 'status' });
  stage.append(viewportEl, info, notice);
  const viewer = new Viewer(viewportEl);
  const overlay = new Overlay(viewer, stage);
  let study: StudyDetail | null = null;
  let loaded: LoadedSeries | null = null;
  let seriesNow: Series | null = null;
  let presetName = 'Image';
  let closed = false;

  const panel = new FindingsPanel({
    studyId,
    sliceNumber: (f) => {
      if (loaded && f.series_instance_uid === seriesNow?.series_instance_uid) {
        const i = loaded.slices.findIndex((s) => s.sopInstanceUid === f.sop_instance_uid
          && s.frame === findingFrame(f));
        if (i >= 0) return i + 1;
      }
      return f.slice_index >= 0 ? f.slice_index + 1 : null;
    },
    select: (f) => void select(f),
    overlaysChanged: () => refreshOverlay(),
    startDrawing: () => startDrawing(),
  });

  const draft = new DraftPanel({ studyId, findings: () => panel.findings, select: (f) => void select(f) });
  panel.root.appendChild(draft.root);
  const chat = new ChatPanel(studyId);
  panel.root.appendChild(chat.root);
  void chat.load();

  function refreshOverlay(): void {
    overlay.set(panel.findings, panel.visible, panel.selected, true);
  }

  function updateInfo(): void {
    if (!viewer.loaded) return;
    const w = viewer.window;
    info.textContent = `Slice ${viewer.shownIndex + 1}/${viewer.count} · W ${Math.round(w.width)} `
      + `L ${Math.round(w.center)} · ${presetName}${viewer.inverted ? ' · inverted' : ''}`
      + ` · zoom ${Math.round(viewer.zoom * 100)}%`;
  }
  viewer.onRender(updateInfo);

  /** `early`: the series' metadata already asked for (the study's opening). */
  async function showSeries(series: Series, focus?: Finding, early?: Promise<LoadedSeries>): Promise<void> {
    if (!study) return;
    seriesNow = series;
    for (const b of seriesList.querySelectorAll('button')) {
      b.classList.toggle('active', b.getAttribute('data-series-id') === series.id);
    }
    state.textContent = 'Loading images…';
    try {
      loaded = await (early ?? loadSeries(study.study_instance_uid, series.series_instance_uid));
      mark('metadata');
      if (closed) return;
      const key = focus ? loaded.slices.findIndex((x) => x.sopInstanceUid === focus.sop_instance_uid
        && x.frame === findingFrame(focus)) : -1;
      await viewer.load(loaded.slices, loaded.metadata, Math.max(key, 0));
      presetName = 'Image';
      state.textContent = '';
      panel.draw();
      refreshOverlay();
      updateInfo();
    } catch (err) {
      state.textContent = `Cannot show this series: ${err instanceof Error ? err.message : String(err)}`;
    }
  }

  async function select(f: Finding): Promise<void> {
    panel.selected = f.id;
    panel.draw();
    void api.accessEvent(studyId, { type: 'finding_selected', finding_id: f.id }).catch(() => undefined);
    if (study && f.series_instance_uid !== seriesNow?.series_instance_uid) {
      const series = study.series.find((s) => s.series_instance_uid === f.series_instance_uid);
      if (series) await showSeries(series);
    }
    const index = loaded?.slices.findIndex((s) => s.sopInstanceUid === f.sop_instance_uid
      && s.frame === findingFrame(f)) ?? -1;
    if (index >= 0) await viewer.setIndex(index);
    const box = currentBox(f);
    if (box && viewer.loaded) viewer.centreOn((box[0] + box[2]) / 2, (box[1] + box[3]) / 2);
    refreshOverlay();
    panel.root.querySelector('.finding-item.selected')?.scrollIntoView({ block: 'nearest' });
  }

  function startDrawing(): void {
    if (!viewer.loaded) return;
    overlay.drawing = true;
    stage.classList.add('drawing');
    panel.message.textContent = 'Drag a box on the image, then name the finding (Esc cancels).';
  }

  overlay.onEdited = (id: string, box: Box) => {
    const f = panel.findings.find((x) => x.id === id);
    if (f) void panel.decide(f, { action: 'edit_geometry', bbox_px: box });
  };
  overlay.onDrawn = (box: Box) => {
    stage.classList.remove('drawing');
    const slice = viewer.slice;
    const series = seriesNow;
    if (!slice || !series) return;
    panel.form('own', null, ({ label, text }) => {
      if (!label) return;
      api.addFinding(studyId, { label, bbox_px: box, series_instance_uid: series.series_instance_uid,
        sop_instance_uid: slice.sopInstanceUid, frame: slice.frame, ...(text ? { text } : {}) })
        .then((f) => { panel.replace(f); void select(f); panel.message.textContent = `Added: ${label}`; })
        .catch((err: unknown) => {
          panel.message.textContent = err instanceof ApiError ? err.message : 'Could not add.';
        });
    });
  };

  pointerControls(() => viewer, viewportEl, stage, () => overlay.drawing, () => { presetName = 'Custom'; });

  // A prior opened beside the current study: a second viewer of its own (own window, scroll),
  // labelled with the prior's date; closing it returns to one viewport.
  const priorStage = el('section', { class: 'stage prior-stage', 'aria-label': 'Prior study',
    'data-testid': 'prior-stage', hidden: true });
  const priorViewportEl = el('div', { class: 'viewport', 'data-testid': 'prior-viewport', tabindex: 0,
    'aria-label': 'Prior study images' });
  const priorLabel = el('div', { class: 'prior-label', 'data-testid': 'prior-label' });
  const priorInfo = el('div', { class: 'info prior-info', 'data-testid': 'prior-info' });
  const priorSeries = el('select', { class: 'prior-series', 'aria-label': 'Series of the prior' });
  const priorClose = el('button', { type: 'button', class: 'small prior-close', 'data-action': 'close-prior',
    'aria-label': 'Close the prior' }, 'Close ', kbd('X'));
  priorStage.append(priorViewportEl,
    el('div', { class: 'prior-head' }, priorLabel, priorSeries, priorClose), priorInfo);
  let priorViewer: Viewer | null = null;
  let priorStudy: StudyDetail | null = null;
  let priorPreset = 'Image';
  let priorToken = 0;

  function updatePriorInfo(): void {
    const v = priorViewer;
    if (!v?.loaded) return;
    const w = v.window;
    priorInfo.textContent = `Slice ${v.shownIndex + 1}/${v.count} · W ${Math.round(w.width)} `
      + `L ${Math.round(w.center)} · ${priorPreset}${v.inverted ? ' · inverted' : ''}`;
  }

  async function showPriorSeries(seriesUid: string): Promise<void> {
    const v = priorViewer;
    const s = priorStudy;
    if (!v || !s) return;
    const token = priorToken;
    try {
      const prior = await loadSeries(s.study_instance_uid, seriesUid);
      if (closed || token !== priorToken) return;
      await v.load(prior.slices, prior.metadata, 0);
      priorPreset = 'Image';
      updatePriorInfo();
    } catch (err) {
      priorInfo.textContent = `Cannot show the prior: ${err instanceof Error ? err.message : String(err)}`;
    }
  }

  async function openBeside(prior: Prior): Promise<void> {
    closePrior();
    const token = ++priorToken;
    let detail: StudyDetail;
    try {
      detail = await api.study(prior.retrieved_study_id);
    } catch (err) {
      priors.say(`Cannot open the prior: ${err instanceof ApiError ? err.message : 'network error'}`);
      return;
    }
    if (closed || token !== priorToken) return;
    priorStudy = detail;
    priorLabel.textContent = `Prior · ${priorDate(prior.study_date)}${prior.description ? ` · ${prior.description}` : ''}`;
    priorStage.dataset['priorId'] = prior.prior_id;
    clear(priorSeries);
    const ordered = [...detail.series].sort((a, b) => b.instance_count - a.instance_count);
    for (const series of ordered) {
      priorSeries.appendChild(el('option', { value: series.series_instance_uid,
        text: `${series.description || series.modality} (${series.slice_count || series.instance_count})` }));
    }
    priorSeries.hidden = ordered.length < 2;
    priorStage.hidden = false;
    page.classList.add('with-prior');
    priorViewer = new Viewer(priorViewportEl);
    priorViewer.onRender(updatePriorInfo);
    viewer.fit();
    const first = ordered[0];
    if (first) await showPriorSeries(first.series_instance_uid);
    priorViewportEl.focus();
  }

  function closePrior(): void {
    priorToken++;
    if (!priorViewer) return;
    priorViewer.destroy();
    priorViewer = null;
    priorStudy = null;
    priorStage.hidden = true;
    delete priorStage.dataset['priorId'];
    for (const key of ['rendered', 'slice', 'series', 'imageRect']) delete priorViewportEl.dataset[key];
    clear(priorViewportEl);
    priorInfo.textContent = '';
    page.classList.remove('with-prior');
    viewer.fit();
    viewportEl.focus();
  }

  pointerControls(() => priorViewer, priorViewportEl, priorStage, () => false, () => { priorPreset = 'Custom'; });
  priorSeries.addEventListener('change', () => void showPriorSeries(priorSeries.value));
  priorClose.addEventListener('click', () => closePrior());

  const priors = new PriorsPanel({ studyId, openBeside });
  panel.root.insertBefore(priors.root, draft.root);

  function onKey(e: KeyboardEvent): void {
    if (e.key === 'Escape') {
      if (overlay.drawing) { overlay.drawing = false; stage.classList.remove('drawing'); return; }
      if (panel.closeForm()) return;
      if (!typing(e)) navigate('#/');
      return;
    }
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey || !viewer.loaded) return;
    const f = panel.current;
    // With the focus in the prior's viewport, the viewer keys act on the prior.
    const onPrior = priorViewer?.loaded === true && priorStage.contains(document.activeElement);
    const v = onPrior && priorViewer ? priorViewer : viewer;
    const named = (name: string): void => { if (onPrior) priorPreset = name; else presetName = name; };
    const keys: Record<string, () => void> = {
      ArrowUp: () => void v.scroll(-1), ArrowLeft: () => void v.scroll(-1),
      ArrowDown: () => void v.scroll(1), ArrowRight: () => void v.scroll(1),
      PageUp: () => void v.scroll(-10), PageDown: () => void v.scroll(10),
      Home: () => void v.setIndex(0), End: () => void v.setIndex(v.count - 1),
      i: () => v.toggleInvert(), ' ': () => { v.reset(); named('Image'); },
      '+': () => v.zoomBy(1.25), '=': () => v.zoomBy(1.25), '-': () => v.zoomBy(0.8),
      j: () => panel.step(1), k: () => panel.step(-1), o: () => panel.toggleAll(),
      n: () => startDrawing(), t: () => void draft.generate(),
      p: () => priors.focus(), x: () => closePrior(), c: () => chat.focus(),
    };
    for (const p of PRESETS) keys[p.key] = () => { named(v.applyPreset(p.key) ?? (onPrior ? priorPreset : presetName)); };
    if (f) {
      Object.assign(keys, {
        a: () => void panel.decide(f, { action: 'accept' }),
        r: () => panel.form('reject', f),
        g: () => void panel.decide(f, { action: 'ignore' }),
        d: () => void panel.decide(f, { action: f.current?.include_in_draft ? 'exclude_from_draft' : 'include_in_draft' }),
        e: () => panel.form('edit_text', f),
        l: () => panel.form('relabel', f),
        v: () => panel.toggle(f),
      });
    }
    const action = keys[e.key];
    if (!action) return;
    e.preventDefault();
    action();
  }
  document.addEventListener('keydown', onKey);
  const onResize = (): void => viewer.resize();
  window.addEventListener('resize', onResize);

  const ohif = el('button', { type: 'button', class: 'button', text: 'Open in OHIF' });
  ohif.addEventListener('click', () => {
    openInOhif(studyId).catch((err: unknown) => {
      state.textContent = err instanceof ApiError ? err.message : 'Could not open OHIF.';
    });
  });
  const complete = el('button', { type: 'button', class: 'primary', 'data-action': 'complete',
    text: 'Review complete' });
  complete.addEventListener('click', () => {
    api.complete(studyId).then((s) => {
      state.textContent = `Review complete (${s.state.replaceAll('_', ' ')}).`;
    }).catch((err: unknown) => {
      state.textContent = err instanceof ApiError ? err.message : 'Could not complete.';
    });
  });

  function drawBanner(s: StudyDetail): void {
    clear(banner);
    const p = s.patient;
    const parts: (HTMLElement | null)[] = [];
    const field = (label: string, value: string | undefined | null): HTMLElement | null =>
      value ? el('span', { class: 'field' }, el('span', { class: 'k', text: label }), el('span', { text: value })) : null;
    parts.push(
      el('span', { class: 'patient-name', 'data-testid': 'patient-name', text: patientName(s) || 'Unknown patient' }),
      field('ID', p?.id), field('Sex', p?.sex), field('Age', p?.age), field('Born', p?.birth_date),
      field('Acc.', s.accession), field('Date', s.study_date), field('Mod.', s.modality),
      field('Desc.', s.description), field('Body part', s.body_part),
      field('Referrer', s.referring_physician),
      el('span', { class: `state s-${s.state}`, text: s.state.replaceAll('_', ' ') }));
    for (const part of parts) if (part) banner.appendChild(part);
  }

  function drawSeries(s: StudyDetail): void {
    clear(seriesList);
    const results = s.series.filter(isResult);
    for (const series of s.series.filter((x) => !isResult(x))) {
      const thumb = series.thumbnail_url
        ? el('img', { src: series.thumbnail_url, alt: '', loading: 'lazy', width: 96, height: 96 })
        : el('div', { class: 'no-thumb', text: series.modality });
      const button = el('button', { type: 'button', class: 'series-item', 'data-series-id': series.id },
        thumb, el('span', { class: 'preview-tag', text: 'Preview · not diagnostic' }),
        el('span', { class: 'sdesc', text: series.description || series.modality }),
        el('span', { class: 'scount', text: `${series.slice_count || series.instance_count} images` }));
      button.addEventListener('click', () => void showSeries(series));
      seriesList.appendChild(button);
    }
    if (!results.length) return;
    // The sidecar's own AI results (SR, SEG) are documents, not images: listed apart, never
    // as a thumbnail (OHIF and the PACS display them; the findings panel shows their content).
    const list = el('ul', { class: 'result-list' });
    for (const series of results) {
      list.appendChild(el('li', { class: 'result-item', 'data-series-id': series.id,
        'data-modality': series.modality },
        el('span', { class: 'rkind', text: RESULT_KIND[series.modality] ?? series.modality }),
        el('span', { class: 'sdesc', text: series.description || series.modality }),
        el('span', { class: 'scount', text: `${series.instance_count} version${series.instance_count === 1 ? '' : 's'}` })));
    }
    seriesList.appendChild(el('section', { class: 'results', 'aria-label': 'AI results' },
      el('h3', { text: 'AI results' }), list));
  }

  async function start(): Promise<void> {
    // The findings, the study and (below) the largest series' metadata are asked for at once:
    // the first image waits for the slowest, not for their sum.
    const findingsReply = api.findings(studyId).catch(() => ({ findings: [] }));
    try {
      study = await api.study(studyId);
      mark('study');
    } catch (err) {
      state.textContent = err instanceof ApiError && err.status === 404
        ? 'No such study.' : 'Cannot load the study.';
      return;
    }
    drawBanner(study);
    drawSeries(study);
    if (!ohifBase()) ohif.hidden = true;
    api.open(studyId).then((s) => { if (study) { study = { ...study, state: s.state }; drawBanner(study); } })
      .catch(() => undefined);
    const images = study.series.filter((x) => !isResult(x));
    const largest = [...images].sort((a, b) => b.instance_count - a.instance_count)[0];
    // Most studies open on their largest series (a first finding usually lies in it): its
    // metadata is fetched while the findings are; a finding elsewhere fetches its own.
    const early = largest ? loadSeries(study.study_instance_uid, largest.series_instance_uid) : undefined;
    early?.catch(() => undefined);
    const findings = await findingsReply;
    mark('findings');
    panel.setFindings(findings.findings);
    void draft.load();
    void priors.load();
    // Open on the first finding's key slice (selected, centred), else the largest image series.
    const firstFinding = findings.findings.find((f) => f.sop_instance_uid);
    const series = images.find((x) => x.series_instance_uid === firstFinding?.series_instance_uid)
      ?? largest;
    if (!series) return;
    const metadata = series === largest ? early : undefined;
    if (firstFinding && series.series_instance_uid === firstFinding.series_instance_uid) {
      panel.selected = firstFinding.id;
      await showSeries(series, firstFinding, metadata);
      const box = currentBox(firstFinding);
      if (box && viewer.loaded) viewer.centreOn((box[0] + box[2]) / 2, (box[1] + box[3]) / 2);
      refreshOverlay();
    } else {
      await showSeries(series, undefined, metadata);
    }
  }

  const page = el('div', { class: 'page-study' },
    header(navigate, el('a', { href: '#/', class: 'back', text: '← Worklist (Esc)' })),
    el('div', { class: 'bar' }, banner, el('span', { class: 'spacer' }), ohif, complete),
    el('div', { class: 'layout' }, seriesList,
      el('div', { class: 'centre' }, el('div', { class: 'stages' }, stage, priorStage), state,
        el('p', { class: 'hints' }, kbd('↑'), kbd('↓'), '/wheel slice ', 'drag W/L ',
          kbd('Shift'), '+drag pan ', kbd('Ctrl'), '+drag zoom ',
          ...PRESETS.flatMap((p) => [kbd(p.key), ` ${p.name} `]), kbd('I'), ' invert ',
          kbd('Space'), ' reset ', kbd('N'), ' draw box ', kbd('P'), ' priors ', kbd('X'), ' close prior')),
      panel.root));
  root.appendChild(page);
  void start();
  return () => {
    closed = true;
    document.removeEventListener('keydown', onKey);
    window.removeEventListener('resize', onResize);
    overlay.destroy();
    viewer.destroy();
    priors.destroy();
    priorViewer?.destroy();
  };
}
