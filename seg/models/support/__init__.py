"""What serves the architectures without being one: the strict weight loader, BatchNorm folding, torchvision's
segmentation layouts."""
