// A real OpenID Connect provider for the single sign-on tests: panva's oidc-provider
// (a certified implementation), with its development sign-in screens, on 127.0.0.1.
//
//   node provider.mjs   with OIDC_PORT, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI
//
// Whatever login is typed on its sign-in screen becomes the account: `sub` and `email` are
// that login, verified, so a test signs in as anyone@example.com.
import Provider from "oidc-provider";

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: process.env.OIDC_CLIENT_ID,
      client_secret: process.env.OIDC_CLIENT_SECRET,
      redirect_uris: [process.env.OIDC_REDIRECT_URI],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_post",
    },
  ],
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name", "preferred_username"],
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        const local = id.split("@")[0];
        return {
          sub: id,
          email: id,
          email_verified: true,
          preferred_username: local,
          name: local.charAt(0).toUpperCase() + local.slice(1),
        };
      },
    };
  },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["tests-only-not-secret"] },
});
// Plain HTTP on loopback: the provider would otherwise insist on TLS for its cookies.
provider.proxy = true;

provider.listen(port, "127.0.0.1", () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
