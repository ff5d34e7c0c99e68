package openaierr_test

import (
	"math"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/atlassian-proxy/atlassian-proxy/openaierr"
)

func TestRender(t *testing.T) {
	tests := []struct {
		name                         string
		status                       int
		typ, code, param, msg, wantB string
	}{
		{"nulls", 400, openaierr.TypeInvalidRequest, "", "", "bad", `{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}` + "\n"},
		{"all set, HTML left alone", 404, openaierr.TypeInvalidRequest, "model_not_found", "model", "no <model> & co",
			`{"error":{"message":"no <model> & co","type":"invalid_request_error","param":"model","code":"model_not_found"}}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			rec.Header().Set("Content-Length", "3")
			openaierr.Render(rec, tt.status, tt.typ, tt.code, tt.param, tt.msg)
			if rec.Code != tt.status {
				t.Errorf("status = %d, want %d", rec.Code, tt.status)
			}
			if got := rec.Body.String(); got != tt.wantB {
				t.Errorf("body = %s, want %s", got, tt.wantB)
			}
			for h, want := range map[string]string{"Content-Length": "", "Content-Type": "application/json", "X-Content-Type-Options": "nosniff"} {
				if got := rec.Header().Get(h); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
		})
	}
}

func TestWriteJSONUnencodable(t *testing.T) {
	rec := httptest.NewRecorder()
	openaierr.WriteJSON(rec, http.StatusOK, map[string]float64{"x": math.NaN()})
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("status = %d, want 500", rec.Code)
	}
	want := `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":"internal_error"}}` + "\n"
	if got := rec.Body.String(); got != want {
		t.Errorf("body = %s, want %s", got, want)
	}
}
