module onnxd/bench/peers/go

go 1.26

require github.com/yalue/onnxruntime_go v1.27.0
