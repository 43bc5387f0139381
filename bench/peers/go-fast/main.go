// go-fast-peer: the Go peer as a team that profiles it would write it. Same protocol and models
// as bench/peers/go (net/http, github.com/yalue/onnxruntime_go, KServe v2 JSON and the binary
// tensor data extension); what changes, each choice measured:
//
//   - JSON decoding: github.com/goccy/go-json, the fastest of the candidates that decode into
//     []float32 (decode_test.go; `go test -run x -bench Decode -benchmem -benchtime 40x`, 2-core
//     AMD EPYC shared with other jobs, 2.9 MB body, 150,528 floats, ms per decode):
//     encoding/json 42-45, segmentio/encoding 17-22, bytedance/sonic 8.8-10.8,
//     goccy/go-json 6.2-7.6 (exactly rounded float32: TestGoccySameFloats), a hand-rolled
//     scanner with strconv.ParseFloat(tok, 32) for the data array 21-23 (ParseFloat leaves its
//     fast path on the 17-digit numbers Python's json writes). The request struct is reused
//     from a sync.Pool, so the data slice keeps its backing array: 2 allocations per decode.
//
//   - No per-request garbage on the hot path: pooled body buffers (sized by Content-Length),
//     pooled request structs, responses appended into pooled byte slices with
//     strconv.AppendFloat (no reflection on the way out).
//
//   - ONNX Runtime as onnxd runs it: one session per core for each model, 1 intra-op thread
//     each, inter-op 1, spinning off; a request takes a free session from a channel, so busy
//     Run threads = cores (the go peer shares one session with a cores-wide intra-op pool).
//
//   - GOMAXPROCS = 2 x cores (--gomaxprocs), GOGC 100 (--gogc). Likely why more Ps help: a cgo
//     call (Run) keeps its P until the scheduler hands it off (after ~20 us), so with
//     GOMAXPROCS = cores the short mlp16 Runs occupy every P while connections wait. Quick runs on this 2-core machine
//     (build/onnxd-bench, 2 s warm-up + 6 s, shared with other jobs: numbers are noisy), req/s:
//     GOMAXPROCS 2: S1 51.0-64.5, S3 11,681-14,422; GOMAXPROCS 4: S1 45.7-59.3, S3
//     16,442-17,487; GOMAXPROCS 1: S1 35.0, S3 7,701. With the pools above there is little
//     garbage, and GOGC barely matters: GOGC 100: S1 54.2, S3 10,956; 400: S1 52.3, S3 10,376;
//     off with GOMEMLIMIT 512 MiB: S1 49.5, S3 10,212 (GOMAXPROCS 2); so Go's default stays.
//
//     cd bench/peers/go-fast && go build -o ../../../build/peers/go-fast-peer .
//     build/peers/go-fast-peer --model-repository models --port 8004 \
//     --ort-lib deps/ort/lib/libonnxruntime.so.1
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	json "github.com/goccy/go-json"
	ort "github.com/yalue/onnxruntime_go"
)

type model struct {
	name, version string
	sessions      chan *ort.DynamicAdvancedSession // free sessions, one per core
	inputs        []ort.InputOutputInfo
	outputs       []ort.InputOutputInfo
}

type requestInput struct {
	Name       string         `json:"name"`
	Shape      []int64        `json:"shape"`
	Datatype   string         `json:"datatype"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Data       []float32      `json:"data,omitempty"`
}

type requestOutput struct {
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters,omitempty"`
}

type inferRequest struct {
	ID         string          `json:"id,omitempty"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Inputs     []requestInput  `json:"inputs"`
	Outputs    []requestOutput `json:"outputs,omitempty"`
}

// reset empties a pooled request for the next decode, keeping the data slices' arrays (the
// decoder sets the inputs' length and decodes into the elements in place).
func (r *inferRequest) reset() {
	r.ID, r.Parameters, r.Outputs = "", nil, r.Outputs[:0]
	for i := range r.Inputs {
		in := &r.Inputs[i]
		in.Name, in.Datatype, in.Parameters = "", "", nil
		in.Shape, in.Data = in.Shape[:0], in.Data[:0]
	}
}

var (
	models   = map[string]*model{}
	reqPool  = sync.Pool{New: func() any { return new(inferRequest) }}
	bufPool  = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}
	maxBody  = int64(64 << 20)
	errLarge = errors.New("body larger than 64 MiB")
)

func loadRepository(root string, perModel int) error {
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		vdirs, _ := os.ReadDir(filepath.Join(root, e.Name()))
		best := -1
		for _, v := range vdirs {
			n, err := strconv.Atoi(v.Name())
			if err != nil || n <= 0 {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, e.Name(), v.Name(), "model.onnx")); err == nil && n > best {
				best = n
			}
		}
		if best < 0 {
			continue
		}
		path := filepath.Join(root, e.Name(), strconv.Itoa(best), "model.onnx")
		ins, outs, err := ort.GetInputOutputInfo(path)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		names := func(infos []ort.InputOutputInfo) []string {
			r := make([]string, len(infos))
			for i, x := range infos {
				r[i] = x.Name
			}
			return r
		}
		m := &model{name: e.Name(), version: strconv.Itoa(best), inputs: ins, outputs: outs,
			sessions: make(chan *ort.DynamicAdvancedSession, perModel)}
		for i := 0; i < perModel; i++ {
			opts, err := ort.NewSessionOptions()
			if err != nil {
				return err
			}
			if err := opts.SetIntraOpNumThreads(1); err != nil {
				return err
			}
			if err := opts.SetInterOpNumThreads(1); err != nil {
				return err
			}
			if err := opts.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
				return err
			}
			s, err := ort.NewDynamicAdvancedSession(path, names(ins), names(outs), opts)
			opts.Destroy()
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			m.sessions <- s
		}
		models[e.Name()] = m
		log.Printf("loaded %s version %d (%d sessions)", e.Name(), best, perModel)
	}
	if len(models) == 0 {
		return fmt.Errorf("no models in %s", root)
	}
	return nil
}

func fail(w http.ResponseWriter, status int, format string, args ...any) {
	b, _ := json.Marshal(map[string]string{"error": fmt.Sprintf(format, args...)})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// readBody reads the request body into *buf (grown once to Content-Length when it is known).
func readBody(r *http.Request, buf *[]byte) error {
	b := (*buf)[:0]
	if r.ContentLength > maxBody {
		return errLarge
	}
	if r.ContentLength > int64(cap(b)) {
		b = make([]byte, 0, r.ContentLength)
	}
	for {
		if len(b) == cap(b) {
			if int64(len(b)) >= maxBody {
				return errLarge
			}
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	*buf = b
	return nil
}

// float32View reinterprets little-endian FP32 bytes (x86/arm64 hosts) without copying when the
// slice is 4-byte aligned, else copies.
func float32View(b []byte) []float32 {
	n := len(b) / 4
	if n == 0 {
		return nil
	}
	if uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
		return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), n)
	}
	out := make([]float32, n)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), n*4), b)
	return out
}

func float32Bytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), len(f)*4)
}

// appendString appends s as a JSON string (names and ids: escapes quotes, backslashes and
// control characters).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, `\u00`...)
			b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

func infer(w http.ResponseWriter, r *http.Request) {
	m := models[r.PathValue("model")]
	if m == nil {
		fail(w, http.StatusNotFound, "unknown model '%s'", r.PathValue("model"))
		return
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	if err := readBody(r, bp); err != nil {
		fail(w, http.StatusBadRequest, "reading body: %v", err)
		return
	}
	body := *bp
	req := reqPool.Get().(*inferRequest)
	defer func() { req.reset(); reqPool.Put(req) }()
	var raw []byte
	if hl := r.Header.Get("Inference-Header-Content-Length"); hl != "" {
		n, err := strconv.Atoi(hl)
		if err != nil || n < 0 || n > len(body) {
			fail(w, http.StatusBadRequest, "bad Inference-Header-Content-Length")
			return
		}
		if err := json.Unmarshal(body[:n], req); err != nil {
			fail(w, http.StatusBadRequest, "bad JSON header: %v", err)
			return
		}
		raw = body[n:]
	} else if err := json.Unmarshal(body, req); err != nil {
		fail(w, http.StatusBadRequest, "bad JSON: %v", err)
		return
	}
	if len(req.Inputs) != len(m.inputs) {
		fail(w, http.StatusBadRequest, "expected %d inputs, got %d", len(m.inputs), len(req.Inputs))
		return
	}
	var inArr, outArr [4]ort.Value
	if len(m.inputs) > len(inArr) || len(m.outputs) > len(outArr) {
		fail(w, http.StatusInternalServerError, "more than 4 inputs or outputs")
		return
	}
	inputs, outputs := inArr[:len(m.inputs)], outArr[:len(m.outputs)]
	defer func() {
		for _, v := range inputs {
			if v != nil {
				v.Destroy()
			}
		}
		for _, v := range outputs {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i := range req.Inputs {
		in := &req.Inputs[i]
		idx := -1
		for j, info := range m.inputs {
			if info.Name == in.Name {
				idx = j
			}
		}
		if idx < 0 || in.Datatype != "FP32" || inputs[idx] != nil {
			fail(w, http.StatusBadRequest, "input '%s': unknown or repeated name, or datatype not FP32", in.Name)
			return
		}
		data := in.Data
		if size, ok := in.Parameters["binary_data_size"].(float64); ok {
			if size < 0 || int(size) > len(raw) {
				fail(w, http.StatusBadRequest, "input '%s': body too short", in.Name)
				return
			}
			data = float32View(raw[:int(size)])
			raw = raw[int(size):]
		}
		t, err := ort.NewTensor(ort.NewShape(in.Shape...), data)
		if err != nil {
			fail(w, http.StatusBadRequest, "input '%s': %v", in.Name, err)
			return
		}
		inputs[idx] = t
	}
	s := <-m.sessions
	err := s.Run(inputs, outputs)
	m.sessions <- s
	if err != nil {
		fail(w, http.StatusInternalServerError, "%v", err)
		return
	}
	binaryOut := func(name string) bool {
		for _, o := range req.Outputs {
			if o.Name == name {
				b, _ := o.Parameters["binary_data"].(bool)
				return b
			}
		}
		return false
	}
	// The JSON response (or the binary extension's JSON header), appended by hand.
	op := bufPool.Get().(*[]byte)
	defer bufPool.Put(op)
	out := append((*op)[:0], `{"model_name":`...)
	out = appendString(out, m.name)
	out = append(out, `,"model_version":`...)
	out = appendString(out, m.version)
	if req.ID != "" {
		out = append(out, `,"id":`...)
		out = appendString(out, req.ID)
	}
	out = append(out, `,"outputs":[`...)
	var blobs [4][]byte
	nblobs := 0
	for i, v := range outputs {
		t, ok := v.(*ort.Tensor[float32])
		if !ok {
			fail(w, http.StatusInternalServerError, "output %d is not FP32", i)
			return
		}
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, `{"name":`...)
		out = appendString(out, m.outputs[i].Name)
		out = append(out, `,"datatype":"FP32","shape":[`...)
		for k, d := range t.GetShape() {
			if k > 0 {
				out = append(out, ',')
			}
			out = strconv.AppendInt(out, d, 10)
		}
		out = append(out, ']')
		if binaryOut(m.outputs[i].Name) {
			b := float32Bytes(t.GetData())
			out = append(out, `,"parameters":{"binary_data_size":`...)
			out = strconv.AppendInt(out, int64(len(b)), 10)
			out = append(out, "}}"...)
			blobs[nblobs] = b
			nblobs++
			continue
		}
		out = append(out, `,"data":[`...)
		for k, f := range t.GetData() {
			if k > 0 {
				out = append(out, ',')
			}
			out = strconv.AppendFloat(out, float64(f), 'g', -1, 32)
		}
		out = append(out, "]}"...)
	}
	out = append(out, "]}"...)
	*op = out
	h := w.Header()
	if nblobs == 0 {
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(out))}
		w.Write(out)
		return
	}
	total := len(out)
	for _, b := range blobs[:nblobs] {
		total += len(b)
	}
	h["Content-Type"] = []string{"application/octet-stream"}
	h["Inference-Header-Content-Length"] = []string{strconv.Itoa(len(out))}
	h["Content-Length"] = []string{strconv.Itoa(total)}
	w.Write(out)
	for _, b := range blobs[:nblobs] {
		w.Write(b)
	}
}

func main() {
	repo := flag.String("model-repository", "models", "model repository DIR/<model>/<version>/model.onnx")
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 8004, "HTTP port")
	lib := flag.String("ort-lib", "deps/ort/lib/libonnxruntime.so.1", "ONNX Runtime shared library")
	sessions := flag.Int("sessions", runtime.NumCPU(), "sessions per model (1 intra-op thread each)")
	gogc := flag.Int("gogc", 100, "garbage collector target percentage (GOGC; -1: off)")
	procs := flag.Int("gomaxprocs", 2*runtime.NumCPU(), "GOMAXPROCS")
	flag.Parse()
	debug.SetGCPercent(*gogc)
	runtime.GOMAXPROCS(*procs)

	ort.SetSharedLibraryPath(*lib)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		log.Fatalf("onnxruntime: %v", err)
	}
	defer ort.DestroyEnvironment()
	if err := loadRepository(*repo, *sessions); err != nil {
		log.Fatalf("models: %v", err)
	}
	names := make([]string, 0, len(models))
	for n := range models {
		names = append(names, n)
	}
	sort.Strings(names)

	mux := http.NewServeMux()
	ready := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ready":true}`)
	}
	mux.HandleFunc("GET /v2/health/ready", ready)
	mux.HandleFunc("GET /v2/health/live", ready)
	mux.HandleFunc("POST /v2/models/{model}/infer", infer)
	addr := fmt.Sprintf("%s:%d", *host, *port)
	log.Printf("serving %s on %s (%d sessions per model x 1 intra-op thread, GOMAXPROCS %d, GOGC %d)",
		strings.Join(names, ", "), addr, *sessions, runtime.GOMAXPROCS(0), *gogc)
	log.Fatal(http.ListenAndServe(addr, mux))
}
