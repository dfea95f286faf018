"""Training: the loop shared by pretraining and finetuning, the objectives and the negative samplers."""
