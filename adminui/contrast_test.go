package adminui

import (
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The admin pages' colours meet WCAG 2.2 AA: text (all of it small: at most
// 15 px bold, 26 px only for the card figures) at least 4.5:1 against its
// background (1.4.3), and what identifies a control or carries meaning in a
// graphic at least 3:1 against what is next to it (1.4.11). These tests read
// admin.css as the browser gets it, so that a colour change cannot regress.

// cssRule is one rule of a style sheet: its selector list, as written, and
// its declarations (property → value, custom properties resolved).
type cssRule struct {
	selector string
	decls    map[string]string
}

var (
	cssComment = regexp.MustCompile(`(?s)/\*.*?\*/`)
	cssVar     = regexp.MustCompile(`var\((--[a-z0-9-]+)\)`)
	hexColour  = regexp.MustCompile(`#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{3})\b`)
)

// parseCSS reads the rules of a style sheet (those inside @media blocks
// too, selector prefixed with the at-rule) and resolves var(--x) from the
// :root rule.
func parseCSS(t *testing.T, css string) []cssRule {
	t.Helper()
	css = cssComment.ReplaceAllString(css, "")
	var rules []cssRule
	var walk func(s, prefix string)
	walk = func(s, prefix string) {
		for {
			open := strings.IndexByte(s, '{')
			if open < 0 {
				if strings.TrimSpace(s) != "" {
					t.Fatalf("admin.css: text outside a rule: %q", strings.TrimSpace(s))
				}
				return
			}
			sel := strings.Join(strings.Fields(s[:open]), " ")
			depth, end := 0, -1
			for i := open; i < len(s); i++ {
				switch s[i] {
				case '{':
					depth++
				case '}':
					depth--
				}
				if depth == 0 {
					end = i
					break
				}
			}
			if end < 0 {
				t.Fatalf("admin.css: unbalanced braces after %q", sel)
			}
			body := s[open+1 : end]
			if strings.HasPrefix(sel, "@") {
				walk(body, sel+" ")
			} else {
				r := cssRule{selector: prefix + sel, decls: map[string]string{}}
				for _, d := range strings.Split(body, ";") {
					name, value, ok := strings.Cut(d, ":")
					if ok {
						r.decls[strings.TrimSpace(name)] = strings.TrimSpace(value)
					}
				}
				rules = append(rules, r)
			}
			s = s[end+1:]
		}
	}
	walk(css, "")
	var root map[string]string
	for _, r := range rules {
		if r.selector == ":root" {
			root = r.decls
		}
	}
	if root == nil {
		t.Fatal("admin.css has no :root rule")
	}
	for _, r := range rules {
		for k, v := range r.decls {
			for range 5 { // a variable may name another
				v = cssVar.ReplaceAllStringFunc(v, func(m string) string {
					name := cssVar.FindStringSubmatch(m)[1]
					val, ok := root[name]
					if !ok {
						t.Errorf("admin.css: %s uses the undefined %s", r.selector, name)
					}
					return val
				})
			}
			r.decls[k] = v
		}
	}
	return rules
}

// rule returns the rule with exactly this selector list.
func rule(t *testing.T, rules []cssRule, selector string) cssRule {
	t.Helper()
	for _, r := range rules {
		if r.selector == selector {
			return r
		}
	}
	t.Fatalf("admin.css has no rule %q", selector)
	return cssRule{}
}

// colourOf returns the solid colour a declaration value gives ("1px solid
// #7a869a", "#fff url(x)"), false when it has none (transparent, rgba).
func colourOf(value string) (string, bool) {
	if strings.Contains(value, "rgba(") || strings.Contains(value, "transparent") {
		return "", false
	}
	c := hexColour.FindString(value)
	return c, c != ""
}

func (r cssRule) colour(t *testing.T, prop string) string {
	t.Helper()
	c, ok := colourOf(r.decls[prop])
	if !ok {
		t.Fatalf("admin.css %s: %s is %q, not a solid colour", r.selector, prop, r.decls[prop])
	}
	return c
}

// luminance is the WCAG relative luminance of a #rgb or #rrggbb colour.
func luminance(t *testing.T, hex string) float64 {
	t.Helper()
	h := strings.TrimPrefix(hex, "#")
	if len(h) == 3 {
		h = string([]byte{h[0], h[0], h[1], h[1], h[2], h[2]})
	}
	if len(h) != 6 {
		t.Fatalf("colour %q", hex)
	}
	var ch [3]float64
	for i := range ch {
		n, err := strconv.ParseUint(h[2*i:2*i+2], 16, 8)
		if err != nil {
			t.Fatalf("colour %q: %v", hex, err)
		}
		c := float64(n) / 255
		if c <= 0.04045 {
			ch[i] = c / 12.92
		} else {
			ch[i] = math.Pow((c+0.055)/1.055, 2.4)
		}
	}
	return 0.2126*ch[0] + 0.7152*ch[1] + 0.0722*ch[2]
}

// contrast is the WCAG contrast ratio of two colours (1 to 21).
func contrast(t *testing.T, a, b string) float64 {
	t.Helper()
	la, lb := luminance(t, a), luminance(t, b)
	return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)
}

func TestContrastRatio(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want float64
	}{
		{"#000", "#fff", 21}, {"#fff", "#fff", 1}, {"#777777", "#ffffff", 4.48}, {"#1f845a", "#dcfff1", 4.35},
		{"#c1c7d0", "#fff", 1.70}, {"#579dff", "#FFF", 2.74},
	} {
		if got := contrast(t, tc.a, tc.b); math.Abs(got-tc.want) > 0.01 {
			t.Errorf("contrast(%s, %s) = %.3f, want %.2f", tc.a, tc.b, got, tc.want)
		}
	}
	for v, want := range map[string]string{"1px solid #7a869a": "#7a869a", "var(--x) #fff": "#fff", "rgba(9, 30, 66, .04)": "", "transparent": ""} {
		if got, _ := colourOf(v); got != want {
			t.Errorf("colourOf(%q) = %q, want %q", v, got, want)
		}
	}
}

func adminCSS(t *testing.T) []cssRule {
	t.Helper()
	css, err := webFS.ReadFile("web/static/admin.css")
	if err != nil {
		t.Fatal(err)
	}
	return parseCSS(t, string(css))
}

// TestTextContrast: every rule that sets both a text colour and a solid
// background (badges, notices, buttons, the top bar…) has 4.5:1, and so
// has each text colour used on the page's two backgrounds (the panels'
// white and the page's grey).
func TestTextContrast(t *testing.T) {
	t.Parallel()
	rules := adminCSS(t)
	root := rule(t, rules, ":root")
	surface, page := root.colour(t, "--surface"), root.colour(t, "--bg")
	pairs := 0
	for _, r := range rules {
		fg, okF := colourOf(r.decls["color"])
		bgValue := r.decls["background"]
		if bgValue == "" {
			bgValue = r.decls["background-color"]
		}
		bg, okB := colourOf(bgValue)
		if !okF || !okB {
			continue
		}
		pairs++
		if got := contrast(t, fg, bg); got < 4.5 {
			t.Errorf("%s: text %s on %s is %.2f:1, want ≥ 4.5:1", r.selector, fg, bg, got)
		}
	}
	if pairs < 10 {
		t.Errorf("only %d rules set a text colour on a background: the parser misses some", pairs)
	}
	// The ready badge of the audit: it must be among them.
	if got := rule(t, rules, ".badge.ready, .badge.result-added"); got.colour(t, "color") == "" {
		t.Error("no ready badge colour")
	}
	for _, sel := range []string{".muted", ".field-error", ".hint", ".card-label", ".tone-ready .card-value", ".tone-cooling .card-value",
		".tone-invalid .card-value", ".tone-disabled .card-value", ".card-value.bad", "a", ".data th"} {
		fg := rule(t, rules, sel).colour(t, "color")
		for _, bg := range []string{surface, page} {
			if got := contrast(t, fg, bg); got < 4.5 {
				t.Errorf("%s: text %s on %s is %.2f:1, want ≥ 4.5:1", sel, fg, bg, got)
			}
		}
	}
	// The top bar's links and logout button, on the bar.
	bar := rule(t, rules, ".topbar").colour(t, "background")
	for _, sel := range []string{".topbar nav a", ".btn.ghost", ".brand-sub"} {
		if fg := rule(t, rules, sel).colour(t, "color"); contrast(t, fg, bar) < 4.5 {
			t.Errorf("%s: text %s on the top bar %s is %.2f:1, want ≥ 4.5:1", sel, fg, bar, contrast(t, fg, bar))
		}
	}
}

// TestNonTextContrast: the borders that show where a text field is, and
// the chart's bars and legend keys, have 3:1 against their background.
func TestNonTextContrast(t *testing.T) {
	t.Parallel()
	rules := adminCSS(t)
	surface := rule(t, rules, ":root").colour(t, "--surface")
	check := func(what, fg, bg string) {
		t.Helper()
		if got := contrast(t, fg, bg); got < 3 {
			t.Errorf("%s: %s on %s is %.2f:1, want ≥ 3:1", what, fg, bg, got)
		}
	}
	inputs := rule(t, rules, `input[type="text"], input[type="email"], input[type="password"], input[type="date"], input:not([type]), textarea`)
	check("text field border", inputs.colour(t, "border"), inputs.colour(t, "background"))
	check("text field border on the panel", inputs.colour(t, "border"), surface)
	copyInput := rule(t, rules, ".copy-row input")
	check("the new token's field border", inputs.colour(t, "border"), copyInput.colour(t, "background"))
	invalidInput := rule(t, rules, `input[aria-invalid="true"], textarea[aria-invalid="true"]`)
	check("invalid text field border", invalidInput.colour(t, "border-color"), invalidInput.colour(t, "background"))
	for _, sel := range []string{".chart .req", ".chart .fail", ".chart .minute:hover .req"} {
		check(sel, rule(t, rules, sel).colour(t, "fill"), surface)
	}
	for _, sel := range []string{".key.req", ".key.fail"} {
		check(sel, rule(t, rules, sel).colour(t, "background"), surface)
	}
	if req, key := rule(t, rules, ".chart .req").colour(t, "fill"), rule(t, rules, ".key.req").colour(t, "background"); req != key {
		t.Errorf("the legend key %s is not the bars' colour %s", key, req)
	}
}

// TestHiddenWins: [hidden] hides whatever display a class gives (the copy
// button is a .btn, inline-flex, hidden until the script shows it).
func TestHiddenWins(t *testing.T) {
	t.Parallel()
	r := rule(t, adminCSS(t), "[hidden]")
	if got := strings.ReplaceAll(r.decls["display"], " ", ""); got != "none!important" {
		t.Errorf("[hidden] { display: %s }, want none !important", r.decls["display"])
	}
}
