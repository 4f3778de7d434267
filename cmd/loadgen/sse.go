package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
)

// sseEvent is one Server-Sent Event (docs/API.md §2.9): its id, its name
// ("message" when the stream gave none) and its data.
type sseEvent struct {
	ID, Event, Data string
}

// sseReader reads Server-Sent Events from a stream, as the HTML standard's
// "event stream interpretation" does: lines are "field: value" (one space
// after the colon is dropped), lines starting with ':' are comments, a blank
// line ends an event, several data lines are joined with "\n", and lines end
// with "\n" or "\r\n" (the standard also allows a lone "\r", which the
// controller never sends and this reader does not accept).
type sseReader struct {
	r    *bufio.Reader
	line []byte // scratch for lines longer than the buffer
}

// maxSSELine bounds one line of the stream; a longer line is an error.
const maxSSELine = 1 << 20

func newSSEReader(r io.Reader) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 8<<10)}
}

var errSSELineTooLong = errors.New("event stream line too long")

// Next returns the next event. Comments, and events without a data line
// (which the standard does not dispatch), are skipped. At the end of the
// stream it returns io.EOF, or io.ErrUnexpectedEOF in the middle of a line
// (an unfinished event is dropped, as the standard says).
func (s *sseReader) Next() (sseEvent, error) {
	var ev sseEvent
	var data strings.Builder
	hasData := false
	for {
		line, err := s.readLine()
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return sseEvent{}, err
		}
		if len(line) == 0 {
			if !hasData {
				ev = sseEvent{}
				continue
			}
			ev.Data = data.String()
			if ev.Event == "" {
				ev.Event = "message"
			}
			return ev, nil
		}
		if line[0] == ':' {
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.Write(value)
			hasData = true
		case "event":
			ev.Event = string(value)
		case "id":
			if !bytes.ContainsRune(value, 0) {
				ev.ID = string(value)
			}
		}
	}
}

// readLine returns the next line without its end of line. The slice is
// valid until the next call.
func (s *sseReader) readLine() ([]byte, error) {
	line, err := s.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		s.line = append(s.line[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) && len(s.line) <= maxSSELine {
			line, err = s.r.ReadSlice('\n')
			s.line = append(s.line, line...)
		}
		if len(s.line) > maxSSELine {
			return nil, errSSELineTooLong
		}
		line = s.line
	}
	if err != nil {
		return line, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// logEventID is the sequence number a log event carries as its id, or -1.
func logEventID(ev sseEvent) int64 {
	n, err := strconv.ParseInt(ev.ID, 10, 64)
	if err != nil {
		return -1
	}
	return n
}
