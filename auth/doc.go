// Package auth holds the secrets handling of atlassian-proxy: the
// AES-256-GCM Cipher that seals stored Atlassian API tokens (the credential
// id is the associated data, so a sealed token cannot be moved to another
// credential), the secret key and its key file, the client API tokens
// ("sk-ap-" + 256 random bits, stored only as a SHA-256 hash), the in-memory
// Tokens cache that verifies a presented token without touching the store,
// and argon2id hashing of the admin password.
//
// Nothing in this package puts a secret, a key or a password into an error
// message.
package auth
