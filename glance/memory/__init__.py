"""The memory plan: which quantization, checkpointing and offload make a run fit the GPU.

    sizes.py                  what a model weighs: safetensors headers, the hub cache, known sizes
    estimates.py              what a plan needs: GPU memory of each training and sampling stage
    gpu.py                    which GPU this is: nvidia-smi, or --gpu-memory
    plans.py                  the training and sampling plans, and the out-of-memory advice
    pipeline_quantization.py  a sampling plan as diffusers' quantization config (imports diffusers)

Each imports only those above it. Nothing but pipeline_quantization.py's function imports torch,
diffusers or transformers.
"""
