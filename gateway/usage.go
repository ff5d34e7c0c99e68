package gateway

import "strings"

// This file reads token usage from unified-chat responses and events, and
// merges the usage a stream spreads over several events.

// usageCounts are the counts of one usage object, each with its presence.
type usageCounts struct {
	in, out, total          int64
	hasIn, hasOut, hasTotal bool
}

// counts reads the counts present (gateway names first, then OpenAI's).
func (u *unifiedUsage) counts() usageCounts {
	var c usageCounts
	if u == nil {
		return c
	}
	pick := func(a, b *flexInt) (int64, bool) {
		switch {
		case a != nil:
			return int64(*a), true
		case b != nil:
			return int64(*b), true
		}
		return 0, false
	}
	c.in, c.hasIn = pick(u.InputTokens, u.PromptTokens)
	c.out, c.hasOut = pick(u.OutputTokens, u.CompletionTokens)
	c.total, c.hasTotal = pick(u.TotalTokens, nil)
	return c
}

// any reports whether a count is present.
func (c usageCounts) any() bool { return c.hasIn || c.hasOut || c.hasTotal }

// usage converts to OpenAI's usage, or nil when no count is present. A
// missing total is input + output.
func (c usageCounts) usage() *Usage {
	if !c.any() {
		return nil
	}
	total := c.total
	if !c.hasTotal {
		total = c.in + c.out
	}
	return &Usage{PromptTokens: c.in, CompletionTokens: c.out, TotalTokens: total}
}

// merge folds the counts of a later event into c, count by count: a
// present non-zero value replaces the earlier one, a present zero only
// fills a count not seen yet (so an event that repeats input_tokens: 0
// next to its output does not erase the input of an earlier one).
func (c *usageCounts) merge(n usageCounts) {
	set := func(dst *int64, has *bool, v int64, present bool) {
		if present && (v != 0 || !*has) {
			*dst, *has = v, true
		}
	}
	set(&c.in, &c.hasIn, n.in, n.hasIn)
	set(&c.out, &c.hasOut, n.out, n.hasOut)
	set(&c.total, &c.hasTotal, n.total, n.hasTotal)
}

// mergedUsage is the usage of merged counts: as usage, except that a
// total smaller than input + output (left by an earlier event, before the
// counts it summed were complete) is recomputed.
func (c usageCounts) mergedUsage() *Usage {
	u := c.usage()
	if u != nil && u.TotalTokens < u.PromptTokens+u.CompletionTokens {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	return u
}

// Where an envelope carries its usage (values of the protocol log).
const (
	usageInMetrics = "platform_attributes.metrics.usage"
	usageInPayload = "response_payload.usage"
)

// usageSource returns the usage object of the envelope that holds a count
// and where it is: platform_attributes.metrics.usage first, else
// response_payload.usage; nil and "" when neither holds one.
func (r *unifiedResponse) usageSource() (u *unifiedUsage, where string) {
	if r.PlatformAttributes != nil && r.PlatformAttributes.Metrics != nil {
		if u = r.PlatformAttributes.Metrics.Usage; u.counts().any() {
			return u, usageInMetrics
		}
	}
	if r.ResponsePayload != nil {
		if u = r.ResponsePayload.Usage; u.counts().any() {
			return u, usageInPayload
		}
	}
	return nil, ""
}

// usageCounts returns the counts carried anywhere in the envelope (see
// usageSource).
func (r *unifiedResponse) usageCounts() usageCounts {
	u, _ := r.usageSource()
	return u.counts()
}

// usageFields are the count keys of a usage object, in the order the
// protocol log lists them.
var usageFields = [...]string{"input_tokens", "output_tokens", "total_tokens", "prompt_tokens", "completion_tokens"}

// fieldMask has bit i set when the count named usageFields[i] is present.
func (u *unifiedUsage) fieldMask() uint8 {
	var m uint8
	for i, v := range [...]*flexInt{u.InputTokens, u.OutputTokens, u.TotalTokens, u.PromptTokens, u.CompletionTokens} {
		if v != nil {
			m |= 1 << i
		}
	}
	return m
}

// usageFieldNames lists the count keys of a fieldMask (for the protocol
// log).
func usageFieldNames(mask uint8) string {
	var names []string
	for i, name := range usageFields {
		if mask&(1<<i) != 0 {
			names = append(names, name)
		}
	}
	return strings.Join(names, ",")
}

// usage returns the usage carried anywhere in the envelope, or nil.
func (r *unifiedResponse) usage() *Usage { return r.usageCounts().usage() }
