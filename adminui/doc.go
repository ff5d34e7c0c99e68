// Package adminui is the operator's side of atlassian-proxy: the service
// layer that manages credentials, client API tokens, the admin password and
// admin sessions (used by the admin JSON API, the admin pages and the CLI),
// and the HTTP handler mounted at /admin: the JSON API under /admin/api and
// the admin web pages.
//
// The handler denies by default: every route except the login routes
// (POST /api/login, GET and POST /login) and the static assets sits behind
// the session middleware (the API answers 401, a page redirects to the
// login page), every state-changing request needs the session's CSRF token
// (the API's X-CSRF-Token header, the pages' csrf_token form field) and
// passes Go's http.CrossOriginProtection, and while a generated password
// has not been changed only login, logout, session and password answer.
// Sessions live in the store (only the SHA-256 of the cookie value is
// stored) with an idle and an absolute timeout; logins are throttled per
// client IP and in total. No response and no error ever carries a stored
// secret: Atlassian tokens are shown masked, client API tokens exactly
// once, at creation.
//
// The pages (pages*.go, templates and assets embedded from web/) are
// server-rendered with html/template: plain forms, POST then redirect,
// errors shown next to their field with what was typed kept (passwords and
// tokens excepted). The one script, web/static/admin.js, only enhances
// them (the dashboard's refresh, countdowns, confirm dialogs, the copy
// button, a credential check in place); the Content-Security-Policy allows
// no inline script or style. The dashboard reads the pool (PoolView), this
// process's last hour (Activity, *usage.Recorder) and the stored usage; the
// credential check asks the upstream (Checker, *gateway.Client).
package adminui
