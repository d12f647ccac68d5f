"""CIFAR-10/100 experiments that check the multi-view predictions on real images."""
