module onnxd/bench/peers/go-image

go 1.26.0

require (
	github.com/yalue/onnxruntime_go v1.27.0
	golang.org/x/image v0.48.0
)
