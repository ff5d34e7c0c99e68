package gateway

import (
	"encoding/json"
	"errors"
)

// This file builds the unified-chat request body (protocol §2):
//
//	{"request_payload": {messages, temperature, max_tokens, top_p, stop, tools,
//	                     tool_choice, user, stream},
//	 "platform_attributes": {"model": "<upstream id>"}}
//
// Only the fields below are ever sent: never `model` inside request_payload,
// never a field the client sent that the proxy does not know.

type unifiedRequest struct {
	RequestPayload     requestPayload    `json:"request_payload"`
	PlatformAttributes requestAttributes `json:"platform_attributes"`
}

type requestAttributes struct {
	Model string `json:"model"`
}

type requestPayload struct {
	Messages    []unifiedInputMessage `json:"messages"`
	Temperature *float64              `json:"temperature,omitempty"`
	MaxTokens   *int                  `json:"max_tokens,omitempty"`
	TopP        *float64              `json:"top_p,omitempty"`
	Stop        []string              `json:"stop,omitempty"`
	Tools       []Tool                `json:"tools,omitempty"`
	ToolChoice  json.RawMessage       `json:"tool_choice,omitempty"`
	User        string                `json:"user,omitempty"`
	Stream      bool                  `json:"stream"`
}

// unifiedInputMessage is Message with content always present (null when the
// client omitted it, as on assistant turns that only call tools).
type unifiedInputMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	Name       string          `json:"name,omitempty"`
	ToolCalls  []ToolCall      `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

// errNoMessages is returned for a request without messages.
var errNoMessages = errors.New("gateway: request has no messages")

// buildRequest translates an OpenAI request into a unified-chat body for m.
func buildRequest(m Model, req *ChatRequest, stream bool) ([]byte, error) {
	if len(req.Messages) == 0 {
		return nil, errNoMessages
	}
	p := requestPayload{
		Messages:    make([]unifiedInputMessage, len(req.Messages)),
		Temperature: req.Temperature,
		MaxTokens:   req.MaxTokens,
		TopP:        req.TopP,
		User:        req.User,
		Stream:      stream,
	}
	if p.MaxTokens == nil {
		p.MaxTokens = req.MaxCompletionTokens
	}
	if len(req.Tools) > 0 {
		p.Tools = make([]Tool, len(req.Tools))
		for i, tool := range req.Tools {
			if tool.Type == "" {
				tool.Type = "function"
			}
			p.Tools[i] = tool
		}
	}
	if len(req.Stop) > 0 {
		p.Stop = req.Stop
	}
	if len(req.ToolChoice) > 0 && string(req.ToolChoice) != "null" {
		p.ToolChoice = req.ToolChoice
	}
	for i, msg := range req.Messages {
		role := msg.Role
		if role == "developer" { // OpenAI's newer name for system instructions
			role = "system"
		}
		um := unifiedInputMessage{
			Role:       role,
			Content:    msg.Content,
			Name:       msg.Name,
			ToolCallID: msg.ToolCallID,
		}
		if len(msg.ToolCalls) > 0 {
			um.ToolCalls = make([]ToolCall, len(msg.ToolCalls))
			for j, tc := range msg.ToolCalls {
				tc.Index = nil
				if tc.Type == "" {
					tc.Type = "function"
				}
				um.ToolCalls[j] = tc
			}
		}
		p.Messages[i] = um
	}
	return json.Marshal(unifiedRequest{
		RequestPayload:     p,
		PlatformAttributes: requestAttributes{Model: m.Upstream},
	})
}
