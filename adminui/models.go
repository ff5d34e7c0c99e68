package adminui

import (
	"strconv"
	"strings"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/gateway"
)

// maxUnknownNamed is how many unknown model names an error names.
const maxUnknownNamed = 5

// checkAllowedModels checks the allowed models of an API token: valid
// names (see validateModels) that catalog knows, as an id or an alias. A
// token limited to a model the proxy does not serve would be refused on
// every request, so such a name is refused when the token is created or
// changed: a *ValidationError for field "allowed_models" naming the
// unknown models ("unknown model 'x'; GET /v1/models lists them"), except
// a name that looks like a secret (a token pasted in the wrong field),
// which is never repeated. None (every model) is fine.
func checkAllowedModels(catalog *gateway.Catalog, models []string) error {
	models, err := validateModels(models)
	if err != nil {
		return err
	}
	var unknown []string
	secret := false
	for _, m := range models {
		if _, ok := catalog.Lookup(m); ok {
			continue
		}
		if looksLikeSecret(m) {
			secret = true
			continue
		}
		unknown = append(unknown, "'"+m+"'")
	}
	switch {
	case len(unknown) == 0 && !secret:
		return nil
	case len(unknown) == 0:
		return invalid("allowed_models", "an allowed model is not a model name (it looks like a token, so it is not shown); GET /v1/models lists them")
	}
	noun := "unknown model "
	if len(unknown) > 1 {
		noun = "unknown models "
	}
	named := unknown[:min(len(unknown), maxUnknownNamed)]
	msg := noun + strings.Join(named, ", ")
	if more := len(unknown) - len(named); more > 0 {
		msg += " and " + strconv.Itoa(more) + " more"
	}
	return invalid("allowed_models", msg+"; GET /v1/models lists them")
}

// checkModels is validateModels, then checkAllowedModels against the
// Service's catalog: the tidied list, or the error.
func (s *Service) checkModels(models []string) ([]string, error) {
	models, err := validateModels(models)
	if err != nil {
		return nil, err
	}
	if err := checkAllowedModels(s.catalog, models); err != nil {
		return nil, err
	}
	return models, nil
}

// looksLikeSecret reports whether an input that should be a name (a model,
// an email) looks like a token instead: one of ours, an Atlassian one, or
// longer than any name.
func looksLikeSecret(s string) bool {
	return strings.HasPrefix(s, auth.TokenPrefix) || strings.HasPrefix(s, "ATATT") || len(s) > 80
}
