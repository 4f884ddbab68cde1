// The OpenID provider of the SSO tests (tests/oidc_peer.py starts it): node-oidc-provider, the
// OpenID-certified implementation, on 127.0.0.1 with one static confidential client and the
// accounts (and their claims) given as JSON in OIDC_PEER_CONFIG. Its built-in development
// sign-in page asks for a login and a password (any password; the account must exist).
import Provider from 'oidc-provider';

const cfg = JSON.parse(process.env.OIDC_PEER_CONFIG);
const accounts = cfg.accounts;

const configuration = {
  clients: [{
    client_id: cfg.client_id,
    client_secret: cfg.client_secret,
    redirect_uris: cfg.redirect_uris,
    post_logout_redirect_uris: cfg.post_logout_redirect_uris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: {
    openid: ['sub'],
    email: ['email'],
    profile: ['name', 'preferred_username', 'realm_access', 'roles', 'facility'],
  },
  conformIdTokenClaims: false,  // profile claims in the ID token, as Keycloak and Entra do
  cookies: { keys: ['sidecar-test-only-cookie-key'] },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  async findAccount(ctx, id) {
    if (!Object.hasOwn(accounts, id)) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...accounts[id] }; } };
  },
  // A first-party client: no consent screen (the grant covers what it asks).
  async loadExistingGrant(ctx) {
    const id = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (id) return ctx.oidc.provider.Grant.find(id);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile email');
    await grant.save();
    return grant;
  },
};

const provider = new Provider(cfg.issuer, configuration);
provider.on('server_error', (ctx, err) => console.error('server_error', err));
const server = provider.listen(cfg.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${cfg.issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
