// go-peer: the Go service onnxd is compared with. net/http + encoding/json +
// github.com/yalue/onnxruntime_go (ONNX Runtime's C API through cgo), serving a KServe v2 model
// repository over the Open Inference Protocol, JSON and the binary tensor data extension.
//
//	go build -o build/peers/go-peer ./bench/peers/go   (run from bench/peers/go: go build -o ...)
//	build/peers/go-peer --model-repository models --port 8003 \
//	    --ort-lib deps/ort/lib/libonnxruntime.so.1
//
// One DynamicAdvancedSession per model, shared by all requests; net/http serves each
// connection on its own goroutine and the handlers call Run concurrently. The session's
// intra-op pool has one thread per core (--intra-op-threads, default runtime.NumCPU()),
// spinning off, inter-op 1.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

type model struct {
	name, version string
	session       *ort.DynamicAdvancedSession
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

type responseOutput struct {
	Name       string         `json:"name"`
	Datatype   string         `json:"datatype"`
	Shape      []int64        `json:"shape"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Data       []float32      `json:"data,omitempty"`
}

type inferResponse struct {
	ModelName    string           `json:"model_name"`
	ModelVersion string           `json:"model_version"`
	ID           string           `json:"id,omitempty"`
	Outputs      []responseOutput `json:"outputs"`
}

var models = map[string]*model{}

func loadRepository(root string, intraOp int) error {
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
		opts, err := ort.NewSessionOptions()
		if err != nil {
			return err
		}
		if err := opts.SetIntraOpNumThreads(intraOp); err != nil {
			return err
		}
		if err := opts.SetInterOpNumThreads(1); err != nil {
			return err
		}
		if err := opts.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
			return err
		}
		names := func(infos []ort.InputOutputInfo) []string {
			r := make([]string, len(infos))
			for i, x := range infos {
				r[i] = x.Name
			}
			return r
		}
		s, err := ort.NewDynamicAdvancedSession(path, names(ins), names(outs), opts)
		opts.Destroy()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		models[e.Name()] = &model{name: e.Name(), version: strconv.Itoa(best), session: s,
			inputs: ins, outputs: outs}
		log.Printf("loaded %s version %d", e.Name(), best)
	}
	if len(models) == 0 {
		return fmt.Errorf("no models in %s", root)
	}
	return nil
}

func fail(w http.ResponseWriter, status int, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf(format, args...)})
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

func infer(w http.ResponseWriter, r *http.Request) {
	m := models[r.PathValue("model")]
	if m == nil {
		fail(w, http.StatusNotFound, "unknown model '%s'", r.PathValue("model"))
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		fail(w, http.StatusBadRequest, "reading body: %v", err)
		return
	}
	var req inferRequest
	binaryIn := r.Header.Get("Inference-Header-Content-Length")
	var raw []byte
	if binaryIn != "" {
		n, err := strconv.Atoi(binaryIn)
		if err != nil || n < 0 || n > len(body) {
			fail(w, http.StatusBadRequest, "bad Inference-Header-Content-Length")
			return
		}
		if err := json.Unmarshal(body[:n], &req); err != nil {
			fail(w, http.StatusBadRequest, "bad JSON header: %v", err)
			return
		}
		raw = body[n:]
	} else if err := json.Unmarshal(body, &req); err != nil {
		fail(w, http.StatusBadRequest, "bad JSON: %v", err)
		return
	}
	if len(req.Inputs) != len(m.inputs) {
		fail(w, http.StatusBadRequest, "expected %d inputs, got %d", len(m.inputs), len(req.Inputs))
		return
	}
	inputs := make([]ort.Value, len(m.inputs))
	defer func() {
		for _, v := range inputs {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for _, in := range req.Inputs {
		idx := -1
		for j, info := range m.inputs {
			if info.Name == in.Name {
				idx = j
			}
		}
		if idx < 0 || in.Datatype != "FP32" {
			fail(w, http.StatusBadRequest, "input '%s': unknown name or datatype (FP32 only)", in.Name)
			return
		}
		data := in.Data
		if size, ok := in.Parameters["binary_data_size"].(float64); ok {
			if int(size) > len(raw) {
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
	outputs := make([]ort.Value, len(m.outputs))
	if err := m.session.Run(inputs, outputs); err != nil {
		fail(w, http.StatusInternalServerError, "%v", err)
		return
	}
	defer func() {
		for _, v := range outputs {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	binaryOut := map[string]bool{}
	for _, o := range req.Outputs {
		if b, _ := o.Parameters["binary_data"].(bool); b {
			binaryOut[o.Name] = true
		}
	}
	resp := inferResponse{ModelName: m.name, ModelVersion: m.version, ID: req.ID}
	var blobs [][]byte
	for i, v := range outputs {
		t, ok := v.(*ort.Tensor[float32])
		if !ok {
			fail(w, http.StatusInternalServerError, "output %d is not FP32", i)
			return
		}
		ro := responseOutput{Name: m.outputs[i].Name, Datatype: "FP32", Shape: t.GetShape()}
		if binaryOut[ro.Name] {
			b := float32Bytes(t.GetData())
			ro.Parameters = map[string]any{"binary_data_size": len(b)}
			blobs = append(blobs, b)
		} else {
			ro.Data = t.GetData()
		}
		resp.Outputs = append(resp.Outputs, ro)
	}
	if len(blobs) == 0 {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(&resp)
		return
	}
	var hdr bytes.Buffer
	json.NewEncoder(&hdr).Encode(&resp)
	h := bytes.TrimRight(hdr.Bytes(), "\n")
	total := len(h)
	for _, b := range blobs {
		total += len(b)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Inference-Header-Content-Length", strconv.Itoa(len(h)))
	w.Header().Set("Content-Length", strconv.Itoa(total))
	w.Write(h)
	for _, b := range blobs {
		w.Write(b)
	}
}

func main() {
	repo := flag.String("model-repository", "models", "model repository DIR/<model>/<version>/model.onnx")
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 8003, "HTTP port")
	lib := flag.String("ort-lib", "deps/ort/lib/libonnxruntime.so.1", "ONNX Runtime shared library")
	intraOp := flag.Int("intra-op-threads", runtime.NumCPU(), "intra-op threads of each session")
	flag.Parse()

	ort.SetSharedLibraryPath(*lib)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		log.Fatalf("onnxruntime: %v", err)
	}
	defer ort.DestroyEnvironment()
	if err := loadRepository(*repo, *intraOp); err != nil {
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
	log.Printf("serving %s on %s (intra-op threads %d)", strings.Join(names, ", "), addr, *intraOp)
	log.Fatal(http.ListenAndServe(addr, mux))
}
