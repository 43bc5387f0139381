// go-grpc-peer: the Go peer with a gRPC front end, as the gRPC benchmarks' (S2g, S3g) Go
// baseline. The Open Inference Protocol's gRPC service (inference.GRPCInferenceService:
// ServerLive, ServerReady, ModelReady, ModelMetadata, ModelInfer) on grpc-go, with the service
// code generated from our proto/inference.proto (gen.sh: protoc + protoc-gen-go +
// protoc-gen-go-grpc, into the git-ignored inferencepb/), and ONNX Runtime through
// github.com/yalue/onnxruntime_go, the same library and session layout as bench/peers/go-fast:
// one session per core for each model, 1 intra-op thread each, a call takes a free session from
// a channel.
//
// What a Go team would write: grpc.NewServer with the message size limits raised to 64 MiB (a
// 600 KB MobileNetV2 request fits the default 4 MiB receive limit, but it is the limit users
// raise first, and the Python peer raises it too), input tensors read from raw_input_contents as a []float32 view of the
// request's bytes (copied only when unaligned), or from contents.fp32_contents; outputs always
// in raw_output_contents. Only FP32 models are served (mobilenetv2, mlp16).
//
//	bash bench/peers/go-grpc/gen.sh && cd bench/peers/go-grpc && go build -o ../../../build/peers/go-grpc-peer .
//	build/peers/go-grpc-peer --model-repository models --port 8001 \
//	--ort-lib deps/ort/lib/libonnxruntime.so.1
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "onnxd/bench/peers/go-grpc/inferencepb"
)

type model struct {
	name, version string
	sessions      chan *ort.DynamicAdvancedSession // free sessions, one per core
	inputs        []ort.InputOutputInfo
	outputs       []ort.InputOutputInfo
}

var models = map[string]*model{}

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

// float32View is b as []float32 without a copy when b is 4-byte aligned (protobuf's bytes
// fields point into the received message, so usually they are not: then it copies).
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

type server struct {
	pb.UnimplementedGRPCInferenceServiceServer
}

func (server) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: true}, nil
}

func (server) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: true}, nil
}

func find(name, version string) (*model, error) {
	m := models[name]
	if m == nil || (version != "" && version != m.version) {
		return nil, status.Errorf(codes.NotFound, "model '%s' version '%s' unknown", name, version)
	}
	return m, nil
}

func (server) ModelReady(_ context.Context, r *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	_, err := find(r.Name, r.Version)
	return &pb.ModelReadyResponse{Ready: err == nil}, nil
}

func tensorMeta(infos []ort.InputOutputInfo) []*pb.ModelMetadataResponse_TensorMetadata {
	out := make([]*pb.ModelMetadataResponse_TensorMetadata, len(infos))
	for i, x := range infos {
		dt := "FP32"
		if x.DataType != ort.TensorElementDataTypeFloat {
			dt = "UNSUPPORTED"
		}
		out[i] = &pb.ModelMetadataResponse_TensorMetadata{Name: x.Name, Datatype: dt, Shape: x.Dimensions}
	}
	return out
}

func (server) ModelMetadata(_ context.Context, r *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	m, err := find(r.Name, r.Version)
	if err != nil {
		return nil, err
	}
	return &pb.ModelMetadataResponse{Name: m.name, Versions: []string{m.version},
		Platform: "onnxruntime_onnx", Inputs: tensorMeta(m.inputs), Outputs: tensorMeta(m.outputs)}, nil
}

func (server) ModelInfer(_ context.Context, r *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	m, err := find(r.ModelName, r.ModelVersion)
	if err != nil {
		return nil, err
	}
	if len(r.Inputs) != len(m.inputs) {
		return nil, status.Errorf(codes.InvalidArgument, "expected %d inputs, got %d", len(m.inputs), len(r.Inputs))
	}
	if len(r.RawInputContents) != 0 && len(r.RawInputContents) != len(r.Inputs) {
		return nil, status.Error(codes.InvalidArgument, "raw_input_contents must have one entry per input")
	}
	inputs := make([]ort.Value, len(m.inputs))
	outputs := make([]ort.Value, len(m.outputs))
	defer func() {
		for _, v := range append(inputs, outputs...) {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, in := range r.Inputs {
		idx := -1
		for j, info := range m.inputs {
			if info.Name == in.Name {
				idx = j
			}
		}
		if idx < 0 || in.Datatype != "FP32" || inputs[idx] != nil {
			return nil, status.Errorf(codes.InvalidArgument,
				"input '%s': unknown or repeated name, or datatype not FP32", in.Name)
		}
		var data []float32
		if len(r.RawInputContents) != 0 {
			data = float32View(r.RawInputContents[i])
		} else if in.Contents != nil {
			data = in.Contents.Fp32Contents
		}
		t, err := ort.NewTensor(ort.NewShape(in.Shape...), data)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "input '%s': %v", in.Name, err)
		}
		inputs[idx] = t
	}
	s := <-m.sessions
	err = s.Run(inputs, outputs)
	m.sessions <- s
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	resp := &pb.ModelInferResponse{ModelName: m.name, ModelVersion: m.version, Id: r.Id,
		Outputs:           make([]*pb.ModelInferResponse_InferOutputTensor, len(outputs)),
		RawOutputContents: make([][]byte, len(outputs))}
	for i, v := range outputs {
		t, ok := v.(*ort.Tensor[float32])
		if !ok {
			return nil, status.Errorf(codes.Internal, "output %d is not FP32", i)
		}
		resp.Outputs[i] = &pb.ModelInferResponse_InferOutputTensor{Name: m.outputs[i].Name,
			Datatype: "FP32", Shape: t.GetShape()}
		d := t.GetData()
		// A copy: the tensor's memory is ORT's and is freed when this function returns.
		resp.RawOutputContents[i] = append([]byte(nil),
			unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(d))), len(d)*4)...)
	}
	return resp, nil
}

func main() {
	repo := flag.String("model-repository", "models", "model repository DIR/<model>/<version>/model.onnx")
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 8001, "gRPC port")
	lib := flag.String("ort-lib", "deps/ort/lib/libonnxruntime.so.1", "ONNX Runtime shared library")
	sessions := flag.Int("sessions", runtime.NumCPU(), "sessions per model (1 intra-op thread each)")
	flag.Parse()

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

	addr := fmt.Sprintf("%s:%d", *host, *port)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	g := grpc.NewServer(grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20))
	pb.RegisterGRPCInferenceServiceServer(g, server{})
	log.Printf("serving %s on %s (gRPC; %d sessions per model x 1 intra-op thread)",
		strings.Join(names, ", "), addr, *sessions)
	log.Fatal(g.Serve(lis))
}
