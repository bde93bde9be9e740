"""What the paper does with a trained model besides sampling: progressive generation and interpolation."""
