// Package schematest validates JSON bodies against OpenAI's published
// response schemas (testdata/openai-chat-schemas.json at the module root),
// for tests. It lives outside internal/ so that every package of the module
// (api, cmd) can use it.
package schematest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// SchemaID is the $id of the bundled schema file.
const SchemaID = "https://atlassian-proxy.invalid/openai-chat-schemas.json"

// Roots of the bundled schema file.
const (
	ChatCompletion      = "#/$defs/CreateChatCompletionResponse"
	ChatCompletionChunk = "#/$defs/CreateChatCompletionStreamResponse"
	ModelList           = "#/$defs/ListModelsResponse"
	Model               = "#/$defs/Model"
	ErrorResponse       = "#/$defs/ErrorResponse"
)

var (
	compileMu sync.Mutex
	compiler  *jsonschema.Compiler
	compiled  = map[string]*jsonschema.Schema{}
)

// Validate fails t unless body is valid against root: a fragment such as
// "#/$defs/CreateChatCompletionResponse" (or one of the constants above),
// a bare definition name such as "CreateChatCompletionStreamResponse", or a
// full URL.
func Validate(t testing.TB, root string, body []byte) {
	t.Helper()
	if err := Check(root, body); err != nil {
		t.Errorf("schema %s: %v\nbody: %s", root, err, body)
	}
}

// Check is Validate as an error, for tests that expect a failure.
func Check(root string, body []byte) error {
	sch, err := schema(root)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("body is not JSON: %w", err)
	}
	return sch.Validate(inst)
}

func schema(root string) (*jsonschema.Schema, error) {
	loc := root
	switch {
	case strings.HasPrefix(root, "#"):
		loc = SchemaID + root
	case !strings.Contains(root, "://"):
		loc = SchemaID + "#/$defs/" + root
	}
	compileMu.Lock()
	defer compileMu.Unlock()
	if s, ok := compiled[loc]; ok {
		return s, nil
	}
	if compiler == nil {
		path, err := findSchemaFile()
		if err != nil {
			return nil, err
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		doc, err := jsonschema.UnmarshalJSON(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		c := jsonschema.NewCompiler()
		if err := c.AddResource(SchemaID, doc); err != nil {
			return nil, err
		}
		compiler = c
	}
	s, err := compiler.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("compile %s: %w", loc, err)
	}
	compiled[loc] = s
	return s, nil
}

// findSchemaFile looks for testdata/openai-chat-schemas.json in the working
// directory (a package directory under go test) and its parents.
func findSchemaFile() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "testdata", "openai-chat-schemas.json")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testdata/openai-chat-schemas.json not found above the working directory")
		}
		dir = parent
	}
}
