package schematest

import "testing"

func TestCheck(t *testing.T) {
	tests := []struct {
		name, root, body string
		valid            bool
	}{
		{"completion", ChatCompletion, `{"id":"a","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":"stop","logprobs":null,"message":{"role":"assistant","content":"hi","refusal":null}}]}`, true},
		{"completion without refusal", ChatCompletion, `{"id":"a","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":"stop","logprobs":null,"message":{"role":"assistant","content":"hi"}}]}`, false},
		{"completion null fingerprint", ChatCompletion, `{"id":"a","object":"chat.completion","created":1,"model":"m","system_fingerprint":null,"choices":[]}`, false},
		{"completion bad finish", ChatCompletion, `{"id":"a","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":"end_turn","logprobs":null,"message":{"role":"assistant","content":"hi","refusal":null}}]}`, false},
		{"chunk by bare name", "CreateChatCompletionStreamResponse", `{"id":"a","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}`, true},
		{"chunk wrong object", ChatCompletionChunk, `{"id":"a","object":"chat.completion","created":1,"model":"m","choices":[]}`, false},
		{"not JSON", ChatCompletionChunk, `{`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.root, []byte(tt.body))
			if (err == nil) != tt.valid {
				t.Errorf("Check = %v, want valid %v", err, tt.valid)
			}
		})
	}
}

func TestUnknownRoot(t *testing.T) {
	if err := Check("#/$defs/NoSuchThing", []byte(`{}`)); err == nil {
		t.Error("Check with an unknown root: no error")
	}
}
