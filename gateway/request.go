package gateway

import (
	"errors"
	"strconv"
)

// This file builds the unified-chat request body (protocol §2):
//
//	{"request_payload": {messages, temperature, max_tokens, top_p, stop, tools,
//	                     tool_choice, user, stream},
//	 "platform_attributes": {"model": "<upstream id>"}}
//
// Only the fields below are ever sent: never `model` inside request_payload,
// never a field the client sent that the proxy does not know.

// errNoMessages is returned for a request without messages.
var errNoMessages = errors.New("gateway: request has no messages")

// buildRequest translates an OpenAI request into a unified-chat body for m.
//
// The body is written by hand rather than by json.Marshal: the client's raw
// JSON values (message content, tool parameters, tool_choice) were checked
// by the decoder and go out byte for byte as they came (whitespace and
// escapes included), where json.Marshal would scan and re-compact every one
// of them again (a long conversation is most of the request). Only the
// strings the proxy writes itself go through appendString. Every raw value
// in req must therefore be valid JSON, as json.Unmarshal guarantees.
func buildRequest(m Model, req *ChatRequest, stream bool) ([]byte, error) {
	if len(req.Messages) == 0 {
		return nil, errNoMessages
	}
	b := make([]byte, 0, requestSize(m, req))
	b = appendList(b, `{"request_payload":{"messages":`, req.Messages, appendMessage)
	if req.Temperature != nil {
		b = append(b, `,"temperature":`...)
		b = appendFloat(b, *req.Temperature)
	}
	maxTokens := req.MaxTokens
	if maxTokens == nil {
		maxTokens = req.MaxCompletionTokens
	}
	if maxTokens != nil {
		b = append(b, `,"max_tokens":`...)
		b = strconv.AppendInt(b, int64(*maxTokens), 10)
	}
	if req.TopP != nil {
		b = append(b, `,"top_p":`...)
		b = appendFloat(b, *req.TopP)
	}
	b = appendList(b, `,"stop":`, req.Stop, func(b []byte, s *string) []byte { return appendString(b, *s) })
	b = appendList(b, `,"tools":`, req.Tools, appendTool)
	if len(req.ToolChoice) > 0 && string(req.ToolChoice) != "null" {
		b = append(b, `,"tool_choice":`...)
		b = append(b, req.ToolChoice...)
	}
	if req.User != "" {
		b = append(b, `,"user":`...)
		b = appendString(b, req.User)
	}
	b = append(b, `,"stream":`...)
	b = strconv.AppendBool(b, stream)
	b = append(b, `},"platform_attributes":{"model":`...)
	b = appendString(b, m.Upstream)
	b = append(b, "}}"...)
	return b, nil
}

// appendList writes key and then xs as a JSON list, each element written
// by one; it writes nothing when xs is empty (an omitted field).
func appendList[T any](b []byte, key string, xs []T, one func([]byte, *T) []byte) []byte {
	if len(xs) == 0 {
		return b
	}
	b = append(b, key...)
	b = append(b, '[')
	for i := range xs {
		if i > 0 {
			b = append(b, ',')
		}
		b = one(b, &xs[i])
	}
	return append(b, ']')
}

// requestSize is a guess of the body's size, so that it is built in one
// allocation in the common case: the raw values plus room for the rest.
func requestSize(m Model, req *ChatRequest) int {
	n := 160 + len(m.Upstream) + len(req.User) + len(req.ToolChoice)
	for i := range req.Messages {
		msg := &req.Messages[i]
		n += 64 + len(msg.Content) + len(msg.Name) + len(msg.ToolCallID)
		for j := range msg.ToolCalls {
			tc := &msg.ToolCalls[j]
			n += 64 + len(tc.ID) + len(tc.Function.Name) + len(tc.Function.Arguments)*9/8
		}
	}
	for i := range req.Tools {
		f := &req.Tools[i].Function
		n += 64 + len(f.Name) + len(f.Description) + len(f.Parameters)
	}
	for _, s := range req.Stop {
		n += 4 + len(s)
	}
	return n
}

// appendMessage writes one input message. Content is always present (null
// when the client omitted it, as on assistant turns that only call tools);
// "developer" is OpenAI's newer name for system instructions.
func appendMessage(b []byte, msg *Message) []byte {
	role := msg.Role
	if role == "developer" {
		role = "system"
	}
	b = append(b, `{"role":`...)
	b = appendString(b, role)
	b = append(b, `,"content":`...)
	if len(msg.Content) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, msg.Content...)
	}
	if msg.Name != "" {
		b = append(b, `,"name":`...)
		b = appendString(b, msg.Name)
	}
	b = appendList(b, `,"tool_calls":`, msg.ToolCalls, appendToolCall)
	if msg.ToolCallID != "" {
		b = append(b, `,"tool_call_id":`...)
		b = appendString(b, msg.ToolCallID)
	}
	return append(b, '}')
}

// appendToolCall writes a call an assistant turn made, without the
// stream-only index and with the type defaulted to "function".
func appendToolCall(b []byte, tc *ToolCall) []byte {
	typ := tc.Type
	if typ == "" {
		typ = "function"
	}
	b = append(b, '{')
	if tc.ID != "" {
		b = append(b, `"id":`...)
		b = appendString(b, tc.ID)
		b = append(b, ',')
	}
	b = append(b, `"type":`...)
	b = appendString(b, typ)
	b = append(b, `,"function":{`...)
	if tc.Function.Name != "" {
		b = append(b, `"name":`...)
		b = appendString(b, tc.Function.Name)
		b = append(b, ',')
	}
	b = append(b, `"arguments":`...)
	b = appendString(b, tc.Function.Arguments)
	return append(b, "}}"...)
}

// appendTool writes a tool definition in OpenAI's shape, the type
// defaulted to "function".
func appendTool(b []byte, t *Tool) []byte {
	typ := t.Type
	if typ == "" {
		typ = "function"
	}
	f := &t.Function
	b = append(b, `{"type":`...)
	b = appendString(b, typ)
	b = append(b, `,"function":{"name":`...)
	b = appendString(b, f.Name)
	if f.Description != "" {
		b = append(b, `,"description":`...)
		b = appendString(b, f.Description)
	}
	if len(f.Parameters) > 0 {
		b = append(b, `,"parameters":`...)
		b = append(b, f.Parameters...)
	}
	if f.Strict != nil {
		b = append(b, `,"strict":`...)
		b = strconv.AppendBool(b, *f.Strict)
	}
	return append(b, "}}"...)
}
