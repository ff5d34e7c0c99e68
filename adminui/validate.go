package adminui

import (
	"net/mail"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Input limits.
const (
	maxEmailLen       = 254
	maxTokenLen       = 4096
	maxLabelLen       = 100
	maxNameLen        = 100
	maxConcurrency    = 1000
	maxModels         = 100
	maxModelLen       = 200
	maxRateLimit      = 1_000_000
	maxExpiryYear     = 2200
	minPasswordLen    = 12
	maxPasswordLen    = 128
	maskVisible       = 4
	minMaskableLength = 24 // shorter tokens are shown fully hidden
)

// maskedUnknown stands for a token that cannot be decrypted.
const maskedUnknown = "(unreadable)"

// MaskToken shows at most the first 4 and the last 4 characters of a
// secret ("ATAT…x9Q2"), and none of a secret shorter than 24 characters,
// so at most a third of any secret is ever shown.
func MaskToken(secret string) string {
	if secret == "" {
		return ""
	}
	r := []rune(secret)
	if len(r) < minMaskableLength {
		return "••••••••"
	}
	return string(r[:maskVisible]) + "…" + string(r[len(r)-maskVisible:])
}

// validateCredential checks a credential's input and returns it
// normalised (trimmed; cloud id in lower case), or its first field's
// error (see credentialProblems for them all).
func validateCredential(in CredentialInput) (CredentialInput, error) {
	in, errs := credentialProblems(in)
	if len(errs) > 0 {
		return in, errs[0]
	}
	return in, nil
}

// credentialProblems checks every field of a credential's input and
// returns it normalised with one *ValidationError per bad field, in the
// order email, token, cloud id, label, max concurrency: a form can show
// them all at once.
func credentialProblems(in CredentialInput) (CredentialInput, []error) {
	var errs []error
	var err error
	if in.Email, err = validateEmail(in.Email); err != nil {
		errs = append(errs, err)
	}
	if in.Token, err = validateCredentialToken(in.Token); err != nil {
		errs = append(errs, err)
	}
	in.CloudID = strings.ToLower(strings.TrimSpace(in.CloudID))
	if in.CloudID != "" && !isUUID(in.CloudID) {
		errs = append(errs, invalid("cloud_id", "cloud id must be a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"))
	}
	if in.Label, err = validateLabel(in.Label); err != nil {
		errs = append(errs, err)
	}
	if err := validateConcurrency(in.MaxConcurrency); err != nil {
		errs = append(errs, err)
	}
	return in, errs
}

// validateCredentialToken checks an Atlassian API token and returns it
// trimmed.
func validateCredentialToken(token string) (string, error) {
	token = strings.TrimSpace(token)
	switch {
	case token == "":
		return token, invalid("token", "token is required")
	case len(token) > maxTokenLen:
		return token, invalid("token", "token is too long")
	case !utf8.ValidString(token):
		return token, invalid("token", "token is not valid text")
	}
	for _, c := range token {
		if unicode.IsSpace(c) {
			return token, invalid("token", "token must not contain spaces or line breaks")
		}
		if !unicode.IsPrint(c) {
			return token, invalid("token", "token must not contain control characters")
		}
	}
	return token, nil
}

// validateEmail checks a credential's email (a bare address, no display
// name) and returns it trimmed.
func validateEmail(email string) (string, error) {
	email = strings.TrimSpace(email)
	switch {
	case email == "":
		return email, invalid("email", "email is required")
	case len(email) > maxEmailLen:
		return email, invalid("email", "email is too long")
	}
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email || addr.Name != "" {
		return email, invalid("email", "email is not a valid address (name@example.com)")
	}
	return email, nil
}

func validateLabel(label string) (string, error) {
	label = strings.TrimSpace(label)
	if !utf8.ValidString(label) {
		return "", invalid("label", "label is not valid text")
	}
	if utf8.RuneCountInString(label) > maxLabelLen {
		return "", invalid("label", "label must be at most 100 characters")
	}
	if strings.IndexFunc(label, unicode.IsControl) >= 0 {
		return "", invalid("label", "label must not contain control characters")
	}
	return label, nil
}

func validateConcurrency(n int) error {
	if n < 0 || n > maxConcurrency {
		return invalid("max_concurrency", "max_concurrency must be between 0 (pool default) and "+strconv.Itoa(maxConcurrency))
	}
	return nil
}

// isUUID reports whether s is a UUID in its canonical 8-4-4-4-12 hex form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func (s *Service) validateToken(in TokenInput) (TokenInput, error) {
	var err error
	if in.Name, err = validateTokenName(in.Name); err != nil {
		return in, err
	}
	if in.ExpiresAt, err = s.validateExpiry(in.ExpiresAt); err != nil {
		return in, err
	}
	if in.AllowedModels, err = s.checkModels(in.AllowedModels); err != nil {
		return in, err
	}
	if err := validateRateLimit(in.RateLimit); err != nil {
		return in, err
	}
	return in, nil
}

func validateTokenName(name string) (string, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return name, invalid("name", "name is required")
	case !utf8.ValidString(name):
		return name, invalid("name", "name is not valid text")
	case utf8.RuneCountInString(name) > maxNameLen:
		return name, invalid("name", "name must be at most 100 characters")
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return name, invalid("name", "name must not contain control characters")
	}
	return name, nil
}

// validateExpiry checks an expiry time (zero: never) and returns it in UTC
// to the second.
func (s *Service) validateExpiry(t time.Time) (time.Time, error) {
	if t.IsZero() {
		return t, nil
	}
	if !t.After(s.now()) {
		return t, invalid("expires_at", "expires_at must be in the future")
	}
	if t.Year() >= maxExpiryYear {
		return t, invalid("expires_at", "expires_at must be before the year 2200")
	}
	return t.UTC().Truncate(time.Second), nil
}

// validateModels trims and de-duplicates allowed model names; none is nil
// (every model).
func validateModels(in []string) ([]string, error) {
	if len(in) > maxModels {
		return nil, invalid("allowed_models", "at most 100 allowed models")
	}
	models := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, m := range in {
		m = strings.TrimSpace(m)
		switch {
		case m == "":
			return nil, invalid("allowed_models", "allowed model names must not be empty")
		case len(m) > maxModelLen || !utf8.ValidString(m):
			return nil, invalid("allowed_models", "allowed model name is too long or not valid text")
		case strings.IndexFunc(m, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
			return nil, invalid("allowed_models", "allowed model names must not contain spaces")
		}
		if !seen[m] {
			seen[m] = true
			models = append(models, m)
		}
	}
	if len(models) == 0 {
		return nil, nil
	}
	return models, nil
}

func validateRateLimit(n int) error {
	if n < 0 || n > maxRateLimit {
		return invalid("rate_limit", "rate_limit must be between 0 (unlimited) and "+strconv.Itoa(maxRateLimit)+" requests per minute")
	}
	return nil
}

// ValidatePassword checks pw against the admin password rules, which
// ADMIN_PASSWORD follows too: 12 to 128 characters (not bytes) of valid
// text, no control characters. The error (a *ValidationError, field
// "password") never repeats the password.
func ValidatePassword(pw string) error { return validateNewPassword("password", pw) }

// validateNewPassword checks the password rules: 12 to 128 characters of
// valid text, no control characters. field names the input in errors.
func validateNewPassword(field, pw string) error {
	if !utf8.ValidString(pw) {
		return invalid(field, "password is not valid text")
	}
	n := utf8.RuneCountInString(pw)
	switch {
	case n < minPasswordLen:
		return invalid(field, "password must be at least 12 characters")
	case n > maxPasswordLen:
		return invalid(field, "password must be at most 128 characters")
	case strings.IndexFunc(pw, unicode.IsControl) >= 0:
		return invalid(field, "password must not contain control characters")
	}
	return nil
}
