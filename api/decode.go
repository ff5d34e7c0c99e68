package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
)

// Decoding runs once, straight into the final types: json.Unmarshal into a
// gateway.ChatRequest, then validation of the decoded structs. Only when
// that decode fails (rare: a client bug) is the body decoded again, element
// by element (locateDecodeError), so that a type error names its index
// ("messages[2].role"), which encoding/json cannot do.

// wireRequest decodes a chat request with its messages and tools kept raw,
// for locateDecodeError. The shallower Messages and Tools fields win over
// those of the embedded ChatRequest.
type wireRequest struct {
	*gateway.ChatRequest
	Messages []json.RawMessage `json:"messages"`
	Tools    []json.RawMessage `json:"tools"`
}

// contentPart is one element of a message's content list, decoded one by
// one to name the part that has a wrong type (validatePartsSlowly).
type contentPart struct {
	Type     string    `json:"type"`
	Text     *string   `json:"text"`
	ImageURL *imageURL `json:"image_url"`
}

type imageURL struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

// partCheck is contentPart for the single decode of a content list: its
// decode fails wherever contentPart's does, but it records what the type
// is and whether text and url are there instead of copying them (a part's
// text or a data: URL can be most of the body). A part it does not find
// valid goes to validatePartsSlowly, which decides and names the error.
type partCheck struct {
	Type     partType  `json:"type"`
	Text     present   `json:"text"`
	ImageURL *urlCheck `json:"image_url"`
}

type urlCheck struct {
	URL    nonEmpty `json:"url"`
	Detail string   `json:"detail"`
}

// errNotString makes the fast decode of content parts fail on a value
// contentPart would refuse; the slow path then names it.
var errNotString = errors.New("not a JSON string")

// partType is the kind a part's type names: partNone until a string is
// seen.
type partType uint8

const (
	partNone  partType = iota // absent, null or ""
	partText                  // "text"
	partImage                 // "image_url"
	partOther                 // any other string
)

func (k *partType) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		// null leaves a string as it was
	case len(b) == 0 || b[0] != '"':
		return errNotString
	case string(b) == `""`:
		*k = partNone
	case string(b) == `"text"`:
		*k = partText
	case string(b) == `"image_url"`:
		*k = partImage
	default:
		// Escaped spellings of the two names are partOther here: the
		// slow path, which decodes them, decides.
		*k = partOther
	}
	return nil
}

// present is true when a JSON string was given (null: false).
type present bool

func (p *present) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		*p = false
	case len(b) > 0 && b[0] == '"':
		*p = true
	default:
		return errNotString
	}
	return nil
}

// nonEmpty is true when a non-empty JSON string was given.
type nonEmpty bool

func (n *nonEmpty) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		// null leaves a string as it was: "" unless a duplicate key set it.
	case len(b) > 0 && b[0] == '"':
		*n = len(b) > 2 // the input is valid JSON: "" is the only empty string
	default:
		return errNotString
	}
	return nil
}

// decodeChatRequest parses and validates the body of a chat completions
// request. Every error is a 400 whose message (and param) names the field.
// The request keeps no reference to body.
func decodeChatRequest(body []byte) (*gateway.ChatRequest, *apiError) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, badRequest("", "The request body is empty: send a JSON object with 'model' and 'messages'.")
	}
	if trimmed[0] != '{' {
		return nil, badRequest("", "The request body must be a JSON object.")
	}
	req := &gateway.ChatRequest{}
	if err := json.Unmarshal(trimmed, req); err != nil {
		return nil, locateDecodeError(trimmed, err)
	}
	if aerr := validateChatRequest(req); aerr != nil {
		return nil, aerr
	}
	return req, nil
}

// locateDecodeError decodes body again, messages and tools one by one, to
// turn the error err of the single-pass decode into a message naming the
// field, with the index of the message or tool it is in.
func locateDecodeError(body []byte, err error) *apiError {
	wire := wireRequest{ChatRequest: &gateway.ChatRequest{}}
	if err := json.Unmarshal(body, &wire); err != nil {
		return jsonError("", err)
	}
	for i, raw := range wire.Messages {
		var m gateway.Message
		if err := json.Unmarshal(raw, &m); err != nil {
			return jsonError(indexPath("messages", i), err)
		}
	}
	for i, raw := range wire.Tools {
		var t gateway.Tool
		if err := json.Unmarshal(raw, &t); err != nil {
			return jsonError(indexPath("tools", i), err)
		}
	}
	// Not expected: both decodes accept and refuse the same input.
	return jsonError("", err)
}

// indexPath is prefix + "[i]".
func indexPath(prefix string, i int) string {
	return prefix + "[" + strconv.Itoa(i) + "]"
}

// jsonError turns a decoding error into a 400. prefix is the path of the
// value being decoded ("" for the body).
func jsonError(prefix string, err error) *apiError {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		// The fields of the embedded ChatRequest carry its name as a
		// first path element: the client knows them as top-level fields.
		field := joinPath(prefix, strings.TrimPrefix(te.Field, "ChatRequest."))
		if field == "" {
			return badRequest("", "The request body must be a JSON object.")
		}
		want := describeType(te.Type)
		if last := field[strings.LastIndexByte(field, '.')+1:]; last == "stop" {
			want = "a string or an array of strings"
		}
		return badRequest(field, "Invalid type for '%s': expected %s, but got %s instead.", field, want, describeValue(te.Value))
	case errors.As(err, &se):
		return badRequest("", "The request body is not valid JSON (%s at byte %d).", se.Error(), se.Offset)
	default:
		// Unexpected end of input and the like: encoding/json's messages
		// carry no client data beyond a character.
		return badRequest(prefix, "The request body is not valid JSON (%s).", err.Error())
	}
}

func joinPath(prefix, field string) string {
	switch {
	case prefix == "":
		return field
	case field == "":
		return prefix
	default:
		return prefix + "." + field
	}
}

func describeType(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return describeType(t.Elem())
	}
	return "another type"
}

func describeValue(v string) string {
	switch v {
	case "string":
		return "a string"
	case "number":
		return "a number"
	case "bool":
		return "a boolean"
	case "array":
		return "an array"
	case "object":
		return "an object"
	}
	if n, ok := strings.CutPrefix(v, "number "); ok {
		return "the number " + clip(n, 40)
	}
	return clip(v, 40)
}

// Message roles the proxy accepts.
var roles = []string{"system", "developer", "user", "assistant", "tool"}

func validateChatRequest(req *gateway.ChatRequest) *apiError {
	if req.Model == "" {
		return badRequest("model", "You must provide a model parameter ('model').")
	}
	if len(req.Messages) == 0 {
		return badRequest("messages", "'messages' must be a non-empty array of messages.")
	}
	for i := range req.Messages {
		if aerr := validateMessage(i, &req.Messages[i]); aerr != nil {
			return aerr
		}
	}
	if t := req.Temperature; t != nil && (*t < 0 || *t > 2) {
		return badRequest("temperature", "Invalid 'temperature': %g is out of range, it must be between 0 and 2.", *t)
	}
	if p := req.TopP; p != nil && (*p < 0 || *p > 1) {
		return badRequest("top_p", "Invalid 'top_p': %g is out of range, it must be between 0 and 1.", *p)
	}
	if n := req.MaxTokens; n != nil && *n < 1 {
		return badRequest("max_tokens", "Invalid 'max_tokens': %d, it must be at least 1.", *n)
	}
	if n := req.MaxCompletionTokens; n != nil && *n < 1 {
		return badRequest("max_completion_tokens", "Invalid 'max_completion_tokens': %d, it must be at least 1.", *n)
	}
	names := make(map[string]bool, len(req.Tools))
	for i := range req.Tools {
		if aerr := validateTool(indexPath("tools", i), &req.Tools[i]); aerr != nil {
			return aerr
		}
		names[req.Tools[i].Function.Name] = true
	}
	return validateToolChoice(req.ToolChoice, names)
}

// validateMessage checks messages[i]. Paths are built only for an error:
// a long conversation is validated without allocating.
func validateMessage(i int, m *gateway.Message) *apiError {
	switch m.Role {
	case "":
		path := indexPath("messages", i)
		return badRequest(path+".role", "Missing required parameter: '%s.role'.", path)
	case "system", "developer", "user":
		if len(m.ToolCalls) > 0 {
			return toolCallsNotAllowed(indexPath("messages", i))
		}
		return validateContent(i, m.Role, m.Content, true)
	case "assistant":
		for j := range m.ToolCalls {
			if aerr := validateToolCall(i, j, &m.ToolCalls[j]); aerr != nil {
				return aerr
			}
		}
		return validateContent(i, m.Role, m.Content, len(m.ToolCalls) == 0)
	case "tool":
		if m.ToolCallID == "" {
			path := indexPath("messages", i)
			return badRequest(path+".tool_call_id", "Missing required parameter: '%s.tool_call_id' (a tool message answers one tool call).", path)
		}
		if len(m.ToolCalls) > 0 {
			return toolCallsNotAllowed(indexPath("messages", i))
		}
		return validateContent(i, m.Role, m.Content, true)
	default:
		path := indexPath("messages", i)
		return badRequest(path+".role", "Invalid value for '%s.role': '%s'. Supported values are: '%s'.",
			path, clip(m.Role, 40), strings.Join(roles, "', '"))
	}
}

func toolCallsNotAllowed(path string) *apiError {
	return badRequest(path+".tool_calls", "Invalid parameter: '%s.tool_calls' is only allowed on assistant messages.", path)
}

// validateContent checks the content of messages[i]: a string, a
// non-empty list of content parts, or (when not required) null or absent.
func validateContent(i int, role string, raw json.RawMessage, required bool) *apiError {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		if required {
			path := indexPath("messages", i) + ".content"
			return badRequest(path, "Missing required parameter: '%s'.", path)
		}
		return nil
	}
	switch raw[0] {
	case '"':
		return nil
	case '[':
		// One decode of every part. On a type error or an invalid part,
		// the parts are decoded again one by one to name the culprit.
		var parts []partCheck
		if err := json.Unmarshal(raw, &parts); err != nil {
			return validatePartsSlowly(indexPath("messages", i)+".content", role, raw)
		}
		if len(parts) == 0 {
			if required {
				path := indexPath("messages", i) + ".content"
				return badRequest(path, "Invalid '%s': an array of content parts must not be empty.", path)
			}
			return nil
		}
		for _, p := range parts {
			ok := false
			switch p.Type {
			case partText:
				ok = bool(p.Text)
			case partImage:
				ok = role == "user" && p.ImageURL != nil && bool(p.ImageURL.URL)
			}
			if !ok {
				return validatePartsSlowly(indexPath("messages", i)+".content", role, raw)
			}
		}
		return nil
	default:
		path := indexPath("messages", i) + ".content"
		return badRequest(path, "Invalid type for '%s': expected a string or an array of content parts, but got %s instead.", path, jsonKind(raw))
	}
}

// validatePartsSlowly checks a list of content parts one by one, to name
// the one that is wrong. It decides: it returns nil if every part is valid.
func validatePartsSlowly(path, role string, raw json.RawMessage) *apiError {
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return jsonError(path, err)
	}
	for i, p := range parts {
		pp := indexPath(path, i)
		if k := jsonKind(p); k != "an object" {
			return badRequest(pp, "Invalid type for '%s': expected an object, but got %s instead.", pp, k)
		}
		var part contentPart
		if err := json.Unmarshal(p, &part); err != nil {
			return jsonError(pp, err)
		}
		hasURL := part.ImageURL != nil && part.ImageURL.URL != ""
		if !validPart(role, part.Type, part.Text != nil, hasURL) {
			return partError(pp, role, part.Type)
		}
	}
	// Every part is valid: the single decode was only cautious (a type
	// spelled with escapes).
	return nil
}

// validPart reports whether a content part of a message of role is
// acceptable; partError says why one is not.
func validPart(role, typ string, hasText, hasURL bool) bool {
	switch typ {
	case "text":
		return hasText
	case "image_url":
		return role == "user" && hasURL
	}
	return false
}

// partError is the error of a content part that validPart refused.
func partError(path, role, typ string) *apiError {
	switch typ {
	case "text":
		return badRequest(path+".text", "Missing required parameter: '%s.text'.", path)
	case "image_url":
		if role != "user" {
			return badRequest(path+".type", "Invalid value for '%s.type': 'image_url' parts are only allowed in user messages.", path)
		}
		return badRequest(path+".image_url.url", "Missing required parameter: '%s.image_url.url'.", path)
	case "":
		return badRequest(path+".type", "Missing required parameter: '%s.type'.", path)
	default:
		return badRequest(path+".type", "Invalid value for '%s.type': '%s'. Supported values are: 'text' and 'image_url'.", path, clip(typ, 40))
	}
}

// jsonKind names the kind of a JSON value by its first byte.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// validateToolCall checks messages[i].tool_calls[j].
func validateToolCall(i, j int, tc *gateway.ToolCall) *apiError {
	path := func() string { return indexPath(indexPath("messages", i)+".tool_calls", j) }
	switch tc.Type {
	case "":
		tc.Type = "function"
	case "function":
	default:
		p := path()
		return badRequest(p+".type", "Invalid value for '%s.type': '%s'. Supported value: 'function'.", p, clip(tc.Type, 40))
	}
	if tc.ID == "" {
		p := path()
		return badRequest(p+".id", "Missing required parameter: '%s.id'.", p)
	}
	if tc.Function.Name == "" {
		p := path()
		return badRequest(p+".function.name", "Missing required parameter: '%s.function.name'.", p)
	}
	return nil
}

func validateTool(path string, t *gateway.Tool) *apiError {
	if t.Type != "function" {
		if t.Type == "" {
			return badRequest(path+".type", "Missing required parameter: '%s.type'.", path)
		}
		return badRequest(path+".type", "Invalid value for '%s.type': '%s'. Supported value: 'function'.", path, clip(t.Type, 40))
	}
	name := t.Function.Name
	if name == "" {
		return badRequest(path+".function.name", "Missing required parameter: '%s.function.name'.", path)
	}
	if !validToolName(name) {
		return badRequest(path+".function.name",
			"Invalid '%s.function.name': '%s'. It must be 1 to 64 letters, digits, underscores or dashes.", path, clip(name, 80))
	}
	if p := bytes.TrimSpace(t.Function.Parameters); len(p) > 0 && string(p) != "null" && p[0] != '{' {
		return badRequest(path+".function.parameters",
			"Invalid type for '%s.function.parameters': expected an object (a JSON Schema), but got %s instead.", path, jsonKind(p))
	}
	return nil
}

func validToolName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validateToolChoice accepts "none", "auto", "required" or
// {"type":"function","function":{"name":...}} naming one of the tools.
func validateToolChoice(raw json.RawMessage, tools map[string]bool) *apiError {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return jsonError("tool_choice", err)
		}
		switch s {
		case "none", "auto":
			return nil
		case "required":
			if len(tools) == 0 {
				return badRequest("tool_choice", "Invalid 'tool_choice': 'required' needs at least one tool in 'tools'.")
			}
			return nil
		}
		return badRequest("tool_choice", "Invalid value for 'tool_choice': '%s'. Supported values are: 'none', 'auto', 'required' or an object naming a function.", clip(s, 40))
	case '{':
		var c struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return jsonError("tool_choice", err)
		}
		if c.Type != "function" {
			return badRequest("tool_choice.type", "Invalid value for 'tool_choice.type': '%s'. Supported value: 'function'.", clip(c.Type, 40))
		}
		if c.Function.Name == "" {
			return badRequest("tool_choice.function.name", "Missing required parameter: 'tool_choice.function.name'.")
		}
		if !tools[c.Function.Name] {
			return badRequest("tool_choice.function.name", "Invalid 'tool_choice': the function '%s' is not one of 'tools'.", clip(c.Function.Name, 80))
		}
		return nil
	default:
		return badRequest("tool_choice", "Invalid type for 'tool_choice': expected a string or an object, but got %s instead.", jsonKind(raw))
	}
}
