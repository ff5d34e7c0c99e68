package api

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/openaierr"
)

func modelObject(m gateway.Model) gateway.ModelObject {
	return gateway.ModelObject{ID: m.ID, Object: "model", Created: m.Created, OwnedBy: m.OwnedBy}
}

// listModels answers GET /v1/models. A client whose token is limited to
// some models sees only those.
func (a *API) listModels(w http.ResponseWriter, r *http.Request) {
	tok, hasToken := tokenFrom(r.Context())
	models := a.catalog.List()
	list := gateway.ModelList{Object: "list", Data: make([]gateway.ModelObject, 0, len(models))}
	for _, m := range models {
		if hasToken && !a.allows(tok, m) {
			continue
		}
		list.Data = append(list.Data, modelObject(m))
	}
	openaierr.WriteJSON(w, http.StatusOK, list)
}

// getModel answers GET /v1/models/{id}; the id is the route's wildcard
// because model ids contain ':' '@' and may contain '/'.
func (a *API) getModel(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "*")
	if r.URL.RawPath != "" {
		// chi routes on the escaped path when there is one (an id with
		// %2F in it): the wildcard is still escaped.
		if un, err := url.PathUnescape(id); err == nil {
			id = un
		}
	}
	m, ok := a.catalog.Lookup(id)
	if ok {
		if tok, hasToken := tokenFrom(r.Context()); hasToken && !a.allows(tok, m) {
			ok = false
		}
	}
	if !ok {
		aerr := modelNotFound(id)
		aerr.log(r.Context())
		aerr.render(w)
		return
	}
	openaierr.WriteJSON(w, http.StatusOK, modelObject(m))
}

func modelNotFound(name string) *apiError {
	return &apiError{
		status: http.StatusNotFound, typ: openaierr.TypeInvalidRequest, code: "model_not_found", param: "model",
		message: fmt.Sprintf("The model '%s' does not exist or you do not have access to it. GET /v1/models lists the models.", clip(name, 200)),
	}
}
