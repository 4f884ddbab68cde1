// The login view: "Sign in with …" when an identity provider is configured, and the local
// (break-glass) username and password unless switched off; errors shown as text.

import { api, ApiError, type AuthMethods } from '../api';
import { el } from '../dom';
import { store } from '../store';

/** Why a sign-on came back refused (the gateway's `sso_error`), as the user reads it. */
const SSO_ERRORS: Record<string, string> = {
  NO_ROLE: 'Your sign-on gives you no role in the sidecar; ask an administrator.',
  ACCOUNT_DISABLED: 'This account is disabled; ask an administrator.',
  USERNAME_TAKEN: 'Your username belongs to another sidecar account; ask an administrator.',
  PROVIDER_UNAVAILABLE: 'The identity provider cannot be reached; try again or use a local account.',
  PROVIDER_DENIED: 'The sign-in was cancelled at the identity provider.',
  SIGN_IN_EXPIRED: 'The sign-in took too long or was started in another browser; try again.',
  STATE_MISMATCH: 'The sign-in could not be verified; try again.',
};

function ssoError(): string {
  const params = new URLSearchParams(location.search);
  const reason = params.get('sso_error');
  if (!reason) return '';
  history.replaceState(null, '', location.pathname + location.hash);
  return SSO_ERRORS[reason] ?? `The sign-in was refused (${reason.slice(0, 40)}).`;
}

function ssoBlock(methods: AuthMethods): HTMLElement | null {
  const oidc = methods.oidc;
  if (!oidc) return null;
  const label = `Sign in with ${oidc.name}`;
  if (!oidc.available) {
    return el('div', { class: 'sso' },
      el('button', { type: 'button', class: 'sso', text: label, disabled: true }),
      el('p', { class: 'error', role: 'status',
                text: `Sign-in with ${oidc.name} is unavailable (${oidc.message}).` }));
  }
  return el('div', { class: 'sso' }, el('a', { class: 'button sso', href: oidc.start_url,
                                                text: label }));
}

export function renderLogin(root: HTMLElement, done: () => void): () => void {
  const user = el('input', { id: 'username', name: 'username', autocomplete: 'username',
                             required: true, autofocus: true });
  const pass = el('input', { id: 'password', name: 'password', type: 'password',
                             autocomplete: 'current-password', required: true });
  const message = el('p', { class: 'error', role: 'alert', text: ssoError() });
  const button = el('button', { type: 'submit', text: 'Sign in' });
  const sso = el('div', { class: 'sso-slot' });
  const local = el('div', { class: 'local' },
    el('label', { for: 'username', text: 'Username' }), user,
    el('label', { for: 'password', text: 'Password' }), pass, button);
  const form = el('form', { class: 'login', 'aria-label': 'Sign in' },
    el('h1', { text: 'Radiology AI Sidecar — review' }),
    sso, local, message,
    el('p', { class: 'hint', text: 'AI findings are decision support; previews are not for diagnosis.' }));
  api.methods().then((methods) => {
    const block = ssoBlock(methods);
    if (block) sso.appendChild(block);
    if (!methods.local) {
      local.replaceChildren(el('p', { class: 'hint',
        text: 'Local accounts are switched off here; sign in with the identity provider.' }));
    }
  }).catch(() => undefined);  // the local form still works
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
