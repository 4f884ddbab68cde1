// Entry: routes #/login, #/ (worklist) and #/study/<id>; no PHI ever goes into the URL or title.

import { api, ApiError, setUnauthorizedHandler } from './api';
import { clear } from './dom';
import { store } from './store';
import { mark } from './viewer/timing';
import { renderLogin } from './views/login';
import { renderWorklist } from './views/worklist';

// The study view brings the DICOM viewer (Cornerstone3D, the image loader and its WASM codecs):
// a chunk of its own, fetched when a study is first opened, so the worklist starts light.
const studyView = () => import('./views/study');

const root = document.getElementById('app') as HTMLElement;
let teardown: (() => void) | null = null;

export function navigate(hash: string): void {
  if (location.hash === hash) void route(); else location.hash = hash;
}

async function route(): Promise<void> {
  teardown?.();
  teardown = null;
  clear(root);
  document.title = 'Sidecar review';
  const hash = location.hash || '#/';
  if (!store.get().me && hash !== '#/login') {
    try {
      store.set({ me: await api.me() });
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) { navigate('#/login'); return; }
      throw err;
    }
  }
  const study = /^#\/study\/([0-9a-fA-F-]{36})$/.exec(hash);
  if (hash === '#/login') teardown = renderLogin(root, () => navigate('#/'));
  else if (study?.[1]) {
    const { renderStudy } = await studyView();
    mark('chunk');
    if (location.hash !== hash) return;  // navigated away while the chunk loaded
    teardown = renderStudy(root, study[1], navigate);
  } else {
    teardown = renderWorklist(root, navigate);
    // Warm the study chunk and initialise the viewer (Cornerstone, its decoders) while the
    // radiologist reads the worklist: the first study opened pays for neither.
    const warm = (): void => void studyView().then((m) => m.warmViewer())
      .then(() => mark('warm')).catch(() => undefined);
    const idle = window.requestIdleCallback as typeof window.requestIdleCallback | undefined;
    if (idle) idle(warm, { timeout: 500 }); else window.setTimeout(warm, 0);
  }
}

setUnauthorizedHandler(() => {
  store.set({ me: null });
  navigate('#/login');
});
window.addEventListener('hashchange', () => void route());
void route();
