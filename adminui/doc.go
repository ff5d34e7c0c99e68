// Package adminui is the operator's side of atlassian-proxy: the service
// layer that manages credentials, client API tokens, the admin password and
// admin sessions (used by the admin JSON API, the admin pages and the CLI),
// and the HTTP handler mounted at /admin.
//
// The handler denies by default: every route except POST /api/login sits
// behind the session middleware, every state-changing request needs the
// session's CSRF token (header X-CSRF-Token) and passes Go's
// http.CrossOriginProtection, and while a generated password has not been
// changed only login, logout, session and password answer. Sessions live in
// the store (only the SHA-256 of the cookie value is stored) with an idle
// and an absolute timeout; logins are throttled per client IP and in total.
// No response and no error ever carries a stored secret: Atlassian tokens
// are shown masked, client API tokens exactly once, at creation.
package adminui
