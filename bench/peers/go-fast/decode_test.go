package main

// Decoder candidates on the real S1 body (build/bench/mobilenetv2.json, written by
// bench/run.py: 150,528 floats, ~2.9 MB):
//
//	cd bench/peers/go-fast && ONNXD_S1_BODY=../../../build/bench/mobilenetv2.json \
//	    go test -run x -bench Decode -benchmem
//
// Each decodes the whole request into a struct whose data is []float32.

import (
	stdjson "encoding/json"
	"os"
	"testing"

	"github.com/bytedance/sonic"
	gojson "github.com/goccy/go-json"
	segjson "github.com/segmentio/encoding/json"
)

type stdInput struct {
	Name     string    `json:"name"`
	Shape    []int64   `json:"shape"`
	Datatype string    `json:"datatype"`
	Data     []float32 `json:"data"`
}
type stdRequest struct {
	Inputs []stdInput `json:"inputs"`
}

func body(b *testing.B) []byte {
	p := os.Getenv("ONNXD_S1_BODY")
	if p == "" {
		p = "../../../build/bench/mobilenetv2.json"
	}
	d, err := os.ReadFile(p)
	if err != nil {
		b.Skipf("no S1 body: %v", err)
	}
	return d
}

func check(b *testing.B, n int) {
	if n != 150528 {
		b.Fatalf("decoded %d floats", n)
	}
}

func BenchmarkDecodeEncodingJSON(b *testing.B) {
	d := body(b)
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		var r stdRequest
		if err := stdjson.Unmarshal(d, &r); err != nil {
			b.Fatal(err)
		}
		check(b, len(r.Inputs[0].Data))
	}
}

func BenchmarkDecodeGoccy(b *testing.B) {
	d := body(b)
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		var r stdRequest
		if err := gojson.Unmarshal(d, &r); err != nil {
			b.Fatal(err)
		}
		check(b, len(r.Inputs[0].Data))
	}
}

func BenchmarkDecodeSegmentio(b *testing.B) {
	d := body(b)
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		var r stdRequest
		if err := segjson.Unmarshal(d, &r); err != nil {
			b.Fatal(err)
		}
		check(b, len(r.Inputs[0].Data))
	}
}

func BenchmarkDecodeSonic(b *testing.B) {
	d := body(b)
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		var r stdRequest
		if err := sonic.Unmarshal(d, &r); err != nil {
			b.Fatal(err)
		}
		check(b, len(r.Inputs[0].Data))
	}
}

// The peer's way: goccy into a request reused from a sync.Pool (the data slice keeps its
// backing array between requests).
func BenchmarkDecodeGoccyReused(b *testing.B) {
	d := body(b)
	b.SetBytes(int64(len(d)))
	var r stdRequest
	for b.Loop() {
		if err := gojson.Unmarshal(d, &r); err != nil {
			b.Fatal(err)
		}
		check(b, len(r.Inputs[0].Data))
	}
}

// goccy must give the exactly rounded float32 of each number, as encoding/json does.
func TestGoccySameFloats(t *testing.T) {
	p := os.Getenv("ONNXD_S1_BODY")
	if p == "" {
		p = "../../../build/bench/mobilenetv2.json"
	}
	d, err := os.ReadFile(p)
	if err != nil {
		t.Skipf("no S1 body: %v", err)
	}
	var a, g stdRequest
	if err := stdjson.Unmarshal(d, &a); err != nil {
		t.Fatal(err)
	}
	if err := gojson.Unmarshal(d, &g); err != nil {
		t.Fatal(err)
	}
	for i, x := range a.Inputs[0].Data {
		if g.Inputs[0].Data[i] != x {
			t.Fatalf("float %d: goccy %v, encoding/json %v", i, g.Inputs[0].Data[i], x)
		}
	}
}
