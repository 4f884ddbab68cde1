// The top bar: app name, signed-in user, sign out.

import { api } from '../api';
import { el } from '../dom';
import { store } from '../store';

export function header(navigate: (hash: string) => void, ...extra: HTMLElement[]): HTMLElement {
  const me = store.get().me;
  const out = el('button', { type: 'button', class: 'link', text: 'Sign out' });
  out.addEventListener('click', () => {
    void api.logout().catch(() => '').then((endSession) => {
      store.set({ me: null });
      // A session from the identity provider ends there too (RP-initiated logout).
      if (endSession) location.assign(endSession); else navigate('#/login');
    });
  });
  return el('header', { class: 'top' },
    el('a', { href: '#/', class: 'brand', text: 'Sidecar review' }),
    ...extra,
    el('span', { class: 'spacer' }),
    el('span', { class: 'user', text: me ? `${me.username} (${me.role})` : '' }), out);
}
