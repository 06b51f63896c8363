"""Import and export of other libraries' checkpoints (Hugging Face).

``hf`` holds what every format shares (reading and writing checkpoint directories,
key maps with ``{}`` layer templates); ``hf_gpt2`` and ``hf_bert`` hold one
family's key map, config translation and ``from_hf`` / ``to_hf`` each.
"""
