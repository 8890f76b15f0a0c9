"""The network and its file: the U-Net, the model file, the device and arithmetic, input scaling, ONNX export."""
