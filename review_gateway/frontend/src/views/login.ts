// The login view: username and password, errors shown as text.

import { api, ApiError } from '../api';
import { el } from '../dom';
import { store } from '../store';

export function renderLogin(root: HTMLElement, done: () => void): () => void {
  const user = el('input', { id: 'username', name: 'username', autocomplete: 'username',
                             required: true, autofocus: true });
  const pass = el('input', { id: 'password', name: 'password', type: 'password',
                             autocomplete: 'current-password', required: true });
  const message = el('p', { class: 'error', role: 'alert' });
  const button = el('button', { type: 'submit', text: 'Sign in' });
  const form = el('form', { class: 'login', 'aria-label': 'Sign in' },
    el('h1', { text: 'Radiology AI Sidecar — review' }),
    el('label', { for: 'username', text: 'Username' }), user,
    el('label', { for: 'password', text: 'Password' }), pass,
    button, message,
    el('p', { class: 'hint', text: 'AI findings are decision support; previews are not for diagnosis.' }));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    button.disabled = true;
    message.textContent = '';
    api.login(user.value, pass.value).then((result) => {
      store.set({ me: { username: result.username, role: result.role,
                        facilities: result.facilities } });
      done();
    }).catch((err: unknown) => {
      message.textContent = err instanceof ApiError
        ? (err.status === 429 ? 'Too many attempts; wait a moment.' : err.message)
        : 'The server cannot be reached.';
    }).finally(() => { button.disabled = false; });
  });
  root.appendChild(el('main', { class: 'center' }, form));
  user.focus();
  return () => undefined;
}
