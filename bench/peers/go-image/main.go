// go-image-peer: the Go image classification service S5 compares onnxd with, written the way a
// Go team extends the go peer (bench/peers/go: net/http + encoding/json + onnxruntime_go) to
// take JPEG bytes: the standard library's image/jpeg (and image/png) decoder,
// golang.org/x/image/draw's bilinear scaler, the torchvision recipe by hand, and the top 5.
//
//	go build -o build/peers/go-image-peer .        (from bench/peers/go-image)
//	build/peers/go-image-peer --model models/mobilenetv2/1/model.onnx --labels labels.txt \
//	    --model-name mobilenetv2_image --port 8004 --ort-lib deps/ort/lib/libonnxruntime.so.1
//
// Preprocessing, per image (torchvision's Resize(256), CenterCrop(224), ToTensor, Normalize):
// image.Decode -> draw.BiLinear.Scale to the shorter side 256 (the long side
// int(256 * long / short)) into an *image.RGBA -> the centre 224x224 (offsets rounded as
// torchvision does) read straight from the RGBA pixels -> x / 255, (x - mean) / std, NCHW
// float32. x/image's bilinear filter is not Pillow's (Pillow's bilinear widens its support when
// it downsamples, x/image's does not), so the tensors differ slightly from the Python peer's and
// onnxd's; the cost is what matters here.
//
// The request is KServe v2 with the binary tensor extension: a JSON header
// (Inference-Header-Content-Length) naming one BYTES input of shape [N] with
// "binary_data_size", then N elements, each a 4-byte little-endian length and an image file.
// Outputs with "parameters": {"classification": K} are answered as Triton's classification
// extension: BYTES [N, K] of "score:index:label", best first, score the raw output; without it
// the top 5 all the same. The response is JSON.
//
// One DynamicAdvancedSession shared by all requests (intra-op threads = cores, spinning off,
// inter-op 1), as the go peer; each connection's goroutine decodes and preprocesses its images,
// so decoding runs on all cores next to the model.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"log"
	"math"
	"net/http"
	"os"
	"runtime"
	"strconv"

	ort "github.com/yalue/onnxruntime_go"
	"golang.org/x/image/draw"
)

const (
	resizeTo = 256
	cropTo   = 224
)

var (
	mean = [3]float32{0.485, 0.456, 0.406}
	std  = [3]float32{0.229, 0.224, 0.225}
)

type requestInput struct {
	Name       string         `json:"name"`
	Shape      []int64        `json:"shape"`
	Datatype   string         `json:"datatype"`
	Parameters map[string]any `json:"parameters,omitempty"`
}

type requestOutput struct {
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters,omitempty"`
}

type inferRequest struct {
	ID      string          `json:"id,omitempty"`
	Inputs  []requestInput  `json:"inputs"`
	Outputs []requestOutput `json:"outputs,omitempty"`
}

type responseOutput struct {
	Name     string   `json:"name"`
	Datatype string   `json:"datatype"`
	Shape    []int64  `json:"shape"`
	Data     []string `json:"data"`
}

type inferResponse struct {
	ModelName    string           `json:"model_name"`
	ModelVersion string           `json:"model_version"`
	ID           string           `json:"id,omitempty"`
	Outputs      []responseOutput `json:"outputs"`
}

var (
	modelName  string
	session    *ort.DynamicAdvancedSession
	inputName  string
	outputName string
	labels     []string
)

func fail(w http.ResponseWriter, status int, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf(format, args...)})
}

// preprocess decodes one image file and writes its 3x224x224 tensor (NCHW) into dst.
func preprocess(data []byte, dst []float32) error {
	src, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return err
	}
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	var ow, oh int
	if w <= h {
		ow, oh = resizeTo, int(float64(resizeTo)*float64(h)/float64(w))
	} else {
		ow, oh = int(float64(resizeTo)*float64(w)/float64(h)), resizeTo
	}
	if ow < cropTo || oh < cropTo {
		return fmt.Errorf("image %dx%d is too small", w, h)
	}
	rgba := image.NewRGBA(image.Rect(0, 0, ow, oh))
	draw.BiLinear.Scale(rgba, rgba.Bounds(), src, b, draw.Src, nil)
	left := int(math.Round(float64(ow-cropTo) / 2))
	top := int(math.Round(float64(oh-cropTo) / 2))
	plane := cropTo * cropTo
	for y := 0; y < cropTo; y++ {
		row := rgba.Pix[(top+y)*rgba.Stride+left*4:]
		for x := 0; x < cropTo; x++ {
			p := row[x*4 : x*4+3]
			for c := 0; c < 3; c++ {
				dst[c*plane+y*cropTo+x] = (float32(p[c])/255 - mean[c]) / std[c]
			}
		}
	}
	return nil
}

// splitBytes cuts the binary extension's BYTES data into its count elements.
func splitBytes(raw []byte, count int) ([][]byte, error) {
	out := make([][]byte, 0, count)
	for i := 0; i < count; i++ {
		if len(raw) < 4 {
			return nil, fmt.Errorf("BYTES data too short")
		}
		n := int(binary.LittleEndian.Uint32(raw))
		raw = raw[4:]
		if n > len(raw) {
			return nil, fmt.Errorf("BYTES element longer than the data")
		}
		out = append(out, raw[:n])
		raw = raw[n:]
	}
	if len(raw) != 0 {
		return nil, fmt.Errorf("BYTES data longer than its elements")
	}
	return out, nil
}

// topK returns the indices of the k largest scores, best first (ties: the lower index).
func topK(scores []float32, k int) []int {
	idx := make([]int, 0, k+1)
	for i, s := range scores {
		if len(idx) == k && s <= scores[idx[k-1]] {
			continue
		}
		j := len(idx)
		idx = append(idx, i)
		for j > 0 && scores[idx[j-1]] < s {
			idx[j] = idx[j-1]
			j--
		}
		idx[j] = i
		if len(idx) > k {
			idx = idx[:k]
		}
	}
	return idx
}

func infer(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("model") != modelName {
		fail(w, http.StatusNotFound, "unknown model '%s'", r.PathValue("model"))
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		fail(w, http.StatusBadRequest, "reading body: %v", err)
		return
	}
	hl, err := strconv.Atoi(r.Header.Get("Inference-Header-Content-Length"))
	if err != nil || hl < 0 || hl > len(body) {
		fail(w, http.StatusBadRequest, "images come as binary BYTES data (Inference-Header-Content-Length)")
		return
	}
	var req inferRequest
	if err := json.Unmarshal(body[:hl], &req); err != nil {
		fail(w, http.StatusBadRequest, "bad JSON header: %v", err)
		return
	}
	if len(req.Inputs) != 1 || req.Inputs[0].Datatype != "BYTES" || len(req.Inputs[0].Shape) != 1 {
		fail(w, http.StatusBadRequest, "expected one BYTES input of shape [N]")
		return
	}
	in := req.Inputs[0]
	size, ok := in.Parameters["binary_data_size"].(float64)
	if !ok || int(size) > len(body)-hl {
		fail(w, http.StatusBadRequest, "input '%s': bad binary_data_size", in.Name)
		return
	}
	images, err := splitBytes(body[hl:hl+int(size)], int(in.Shape[0]))
	if err != nil {
		fail(w, http.StatusBadRequest, "input '%s': %v", in.Name, err)
		return
	}
	k := 5
	for _, o := range req.Outputs {
		if o.Name != outputName {
			fail(w, http.StatusBadRequest, "unknown output '%s'", o.Name)
			return
		}
		if c, ok := o.Parameters["classification"].(float64); ok && c >= 1 {
			k = int(c)
		}
	}
	n := len(images)
	batch := make([]float32, n*3*cropTo*cropTo)
	for i, img := range images {
		if err := preprocess(img, batch[i*3*cropTo*cropTo:(i+1)*3*cropTo*cropTo]); err != nil {
			fail(w, http.StatusBadRequest, "image %d: %v", i, err)
			return
		}
	}
	t, err := ort.NewTensor(ort.NewShape(int64(n), 3, cropTo, cropTo), batch)
	if err != nil {
		fail(w, http.StatusInternalServerError, "%v", err)
		return
	}
	defer t.Destroy()
	outputs := []ort.Value{nil}
	if err := session.Run([]ort.Value{t}, outputs); err != nil {
		fail(w, http.StatusInternalServerError, "%v", err)
		return
	}
	defer outputs[0].Destroy()
	ot, ok := outputs[0].(*ort.Tensor[float32])
	if !ok {
		fail(w, http.StatusInternalServerError, "output is not FP32")
		return
	}
	scores := ot.GetData()
	classes := len(scores) / n
	if k > classes {
		k = classes
	}
	data := make([]string, 0, n*k)
	for i := 0; i < n; i++ {
		row := scores[i*classes : (i+1)*classes]
		for _, j := range topK(row, k) {
			label := ""
			if j < len(labels) {
				label = labels[j]
			}
			data = append(data, fmt.Sprintf("%f:%d:%s", row[j], j, label))
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(&inferResponse{ModelName: modelName, ModelVersion: "1", ID: req.ID,
		Outputs: []responseOutput{{Name: outputName, Datatype: "BYTES", Shape: []int64{int64(n), int64(k)}, Data: data}}})
}

func readLabels(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		out = append(out, s.Text())
	}
	return out, s.Err()
}

func main() {
	model := flag.String("model", "models/mobilenetv2/1/model.onnx", "the ONNX model")
	labelsPath := flag.String("labels", "labels.txt", "class labels, one per line")
	flag.StringVar(&modelName, "model-name", "mobilenetv2_image", "the model's name in the URL")
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 8004, "HTTP port")
	lib := flag.String("ort-lib", "deps/ort/lib/libonnxruntime.so.1", "ONNX Runtime shared library")
	intraOp := flag.Int("intra-op-threads", runtime.NumCPU(), "intra-op threads of the session")
	flag.Parse()

	var err error
	if labels, err = readLabels(*labelsPath); err != nil {
		log.Fatalf("labels: %v", err)
	}
	ort.SetSharedLibraryPath(*lib)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		log.Fatalf("onnxruntime: %v", err)
	}
	defer ort.DestroyEnvironment()
	ins, outs, err := ort.GetInputOutputInfo(*model)
	if err != nil || len(ins) != 1 || len(outs) < 1 {
		log.Fatalf("%s: want one input and an output (%v)", *model, err)
	}
	inputName, outputName = ins[0].Name, outs[0].Name
	opts, err := ort.NewSessionOptions()
	if err != nil {
		log.Fatal(err)
	}
	if err := opts.SetIntraOpNumThreads(*intraOp); err != nil {
		log.Fatal(err)
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		log.Fatal(err)
	}
	if err := opts.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
		log.Fatal(err)
	}
	session, err = ort.NewDynamicAdvancedSession(*model, []string{inputName}, []string{outputName}, opts)
	opts.Destroy()
	if err != nil {
		log.Fatalf("%s: %v", *model, err)
	}

	mux := http.NewServeMux()
	ready := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ready":true}`)
	}
	mux.HandleFunc("GET /v2/health/ready", ready)
	mux.HandleFunc("GET /v2/health/live", ready)
	mux.HandleFunc("POST /v2/models/{model}/infer", infer)
	addr := fmt.Sprintf("%s:%d", *host, *port)
	log.Printf("serving %s (%s) on %s (intra-op threads %d)", modelName, *model, addr, *intraOp)
	log.Fatal(http.ListenAndServe(addr, mux))
}
