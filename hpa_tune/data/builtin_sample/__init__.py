"""The built-in HPA-like sample: ``render`` draws cell-like four-channel images from real Kaggle
label sets; ``prepared`` renders and prepares them once into the cache."""
