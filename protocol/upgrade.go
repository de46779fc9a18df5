package protocol

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/buildslave/buildslave/protocol/internal/peek"
)

// requestReaders holds the buffered readers of upgrade requests between
// connections: a connection has one only while its request is read.
var requestReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 1024) }}

// serveConn reads one HTTP request from nc and hands it to the Handler,
// which upgrades it or answers it; an answered connection is closed. The
// request and the answer must come within ReadHeaderTimeout.
func (s *Server) serveConn(nc net.Conn) {
	log := s.Handler.logger()
	nc.SetDeadline(time.Now().Add(orDefault(s.ReadHeaderTimeout, DefaultReadHeaderTimeout)))
	// Until the client's first bytes come, wait holding no buffer and a
	// small stack: a storm of dials, or a siege of silent sockets, costs
	// little more than the sockets.
	peek.Wait(nc)
	c := nc
	if s.tls != nil {
		tc := tls.Server(nc, s.tls)
		if err := tc.Handshake(); err != nil {
			log.Debug("slave connection failed", "remote", nc.RemoteAddr().String(), "reason", "TLS handshake: "+err.Error())
			nc.Close()
			return
		}
		c = tc
	}
	maxHeader := s.MaxHeaderBytes
	if maxHeader <= 0 {
		maxHeader = DefaultMaxHeaderBytes
	}
	w := &responseWriter{conn: c, netConn: nc, limited: io.LimitedReader{R: c, N: int64(maxHeader) + 4096}}
	w.br = requestReaders.Get().(*bufio.Reader)
	w.br.Reset(&w.limited)
	defer func() {
		w.br.Reset(nil)
		requestReaders.Put(w.br)
	}()
	r, err := http.ReadRequest(w.br)
	switch {
	case err == nil:
	case w.limited.N <= 0:
		w.refuse(http.StatusRequestHeaderFieldsTooLarge, "request headers too large")
		return
	case errors.Is(err, io.EOF):
		nc.Close()
		return
	default:
		w.refuse(http.StatusBadRequest, "malformed HTTP request")
		return
	}
	r.RemoteAddr = nc.RemoteAddr().String()
	if tc, ok := c.(*tls.Conn); ok {
		state := tc.ConnectionState()
		r.TLS = &state
	}
	s.Handler.ServeHTTP(w, r)
	if !w.hijacked {
		w.finish()
	}
}

// responseWriter is the http.ResponseWriter of a request read by a
// Server: an http.Hijacker for the upgrade, or an answer written whole
// once the Handler returns, after which the connection closes.
type responseWriter struct {
	conn     net.Conn // nc, or the TLS connection over it
	netConn  net.Conn // as accepted, for the Limiter
	limited  io.LimitedReader
	br       *bufio.Reader
	header   http.Header
	status   int
	body     []byte
	hijacked bool
}

var _ http.Hijacker = (*responseWriter)(nil)

func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}

func (w *responseWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, p...)
	return len(p), nil
}

// Hijack hands the connection over for the upgrade, with empty buffers:
// the request was read whole, and a client that sent more before the
// answer is refused.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.br.Buffered() > 0 {
		return nil, nil, errors.New("client sent data before the upgrade was answered")
	}
	w.hijacked = true
	return w.conn, bufio.NewReadWriter(&bufio.Reader{}, bufio.NewWriterSize(w.conn, 256)), nil
}

// refuse answers with status and msg, as http.Error does, and closes the
// connection.
func (w *responseWriter) refuse(status int, msg string) {
	http.Error(w, msg, status)
	w.finish()
}

// finish writes the answer and closes the connection.
func (w *responseWriter) finish() {
	defer w.conn.Close()
	if w.status == 0 {
		w.status = http.StatusOK
	}
	h := w.Header()
	h.Set("Connection", "close")
	h.Set("Content-Length", strconv.Itoa(len(w.body)))
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 " + strconv.Itoa(w.status) + " " + http.StatusText(w.status) + "\r\n")
	h.Write(&b)
	b.WriteString("\r\n")
	b.Write(w.body)
	w.conn.Write(b.Bytes())
}
