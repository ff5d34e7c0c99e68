package store

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Encodings shared by the backends, so that both store the same values
// the same way (an export from one imports into the other unchanged).

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// UnixNanos is how backends store a time: Unix nanoseconds, the zero time
// as 0. Times outside the years 1678 to 2262 are refused.
func UnixNanos(t time.Time) (int64, error) {
	if t.IsZero() {
		return 0, nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		return 0, fmt.Errorf("time %s out of range (years 1678 to 2262)", t.UTC().Format(time.RFC3339))
	}
	return t.UnixNano(), nil
}

// EncodeModels is how backends store APIToken.AllowedModels: a JSON array,
// "[]" for nil and empty.
func EncodeModels(models []string) (string, error) {
	if len(models) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(models)
	if err != nil {
		return "", fmt.Errorf("encode allowed models: %w", err)
	}
	return string(b), nil
}

// DecodeModels reads EncodeModels's form back; an empty list is nil.
func DecodeModels(s string) ([]string, error) {
	var models []string
	if err := json.Unmarshal([]byte(s), &models); err != nil {
		return nil, fmt.Errorf("decode allowed models: %w", err)
	}
	if len(models) == 0 {
		return nil, nil
	}
	return models, nil
}

// DayLayout is the form of Usage.Day.
const DayLayout = "2006-01-02"

// CheckDay rejects a day not written exactly as DayLayout, so that the byte
// order of days is their time order.
func CheckDay(day string) error {
	d, err := time.Parse(DayLayout, day)
	if err != nil || d.Format(DayLayout) != day {
		return fmt.Errorf("invalid day %q (want YYYY-MM-DD)", day)
	}
	return nil
}
