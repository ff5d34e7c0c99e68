package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// maxEventSize bounds one SSE event (all its data lines together).
const maxEventSize = 16 << 20

// errEventTooLarge is returned for an event over maxEventSize.
var errEventTooLarge = fmt.Errorf("gateway: SSE event larger than %d bytes", maxEventSize)

// sseDecoder reads Server-Sent Events and returns the data of each event.
// Events are separated by blank lines; "data:" lines (one optional space
// after the colon) are joined with "\n"; comment lines (":") and other fields
// (event, id, retry) are ignored; lines end in "\n" or "\r\n". The data
// "[DONE]" is returned like any other. At EOF a pending event is returned
// before io.EOF, so a stream that ends without a final blank line still
// yields its last event.
type sseDecoder struct {
	r    *bufio.Reader
	max  int    // maximum event size (maxEventSize; smaller in tests)
	data []byte // data of the event being read
	has  bool   // a data field was seen for the current event
	line []byte // scratch for lines longer than the buffer
}

func newSSEDecoder(r io.Reader) *sseDecoder {
	return &sseDecoder{r: bufio.NewReaderSize(r, 64<<10), max: maxEventSize}
}

// Next returns the data of the next event. The slice is valid until the
// next call. At the clean end it returns io.EOF; a read error is returned
// as is (io.ErrUnexpectedEOF for a cut connection, normally).
func (d *sseDecoder) Next() ([]byte, error) {
	d.data = d.data[:0]
	d.has = false
	for {
		line, err := d.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) == 0 {
				if d.has {
					return d.data, nil
				}
				return nil, io.EOF
			}
			if !errors.Is(err, io.EOF) {
				return nil, err
			}
			// A last line without a newline: process it, then end.
			d.field(line)
			if d.has {
				return d.data, nil
			}
			return nil, io.EOF
		}
		if len(line) == 0 {
			if d.has {
				return d.data, nil
			}
			continue
		}
		if err := d.field(line); err != nil {
			return nil, err
		}
	}
}

// field processes one non-empty line.
func (d *sseDecoder) field(line []byte) error {
	if len(line) == 0 || line[0] == ':' {
		return nil
	}
	name, value, found := bytes.Cut(line, []byte(":"))
	if !bytes.Equal(name, []byte("data")) {
		return nil
	}
	if found && len(value) > 0 && value[0] == ' ' {
		value = value[1:]
	}
	if d.has {
		d.data = append(d.data, '\n')
	}
	if len(d.data)+len(value) > d.max {
		return errEventTooLarge
	}
	d.data = append(d.data, value...)
	d.has = true
	return nil
}

// readLine returns the next line without its terminator. At EOF it returns
// what was read with io.EOF.
func (d *sseDecoder) readLine() ([]byte, error) {
	frag, err := d.r.ReadSlice('\n')
	if err == nil {
		return trimEOL(frag), nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		return trimEOL(frag), err
	}
	d.line = append(d.line[:0], frag...)
	for {
		frag, err = d.r.ReadSlice('\n')
		if len(d.line)+len(frag) > d.max {
			return nil, errEventTooLarge
		}
		d.line = append(d.line, frag...)
		if err == nil {
			return trimEOL(d.line), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return trimEOL(d.line), err
		}
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}
