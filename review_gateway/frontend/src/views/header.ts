// The top bar: app name, signed-in user, sign out.

import { api } from '../api';
import { el } from '../dom';
import { store } from '../store';

export function header(navigate: (hash: string) => void, ...extra: HTMLElement[]): HTMLElement {
  const me = store.get().me;
  const out = el('button', { type: 'button', class: 'link', text: 'Sign out' });
  out.addEventListener('click', () => {
    void api.logout().catch(() => undefined).finally(() => {
      store.set({ me: null });
      navigate('#/login');
    });
  });
  return el('header', { class: 'top' },
    el('a', { href: '#/', class: 'brand', text: 'Sidecar review' }),
    ...extra,
    el('span', { class: 'spacer' }),
    el('span', { class: 'user', text: me ? `${me.username} (${me.role})` : '' }), out);
}
