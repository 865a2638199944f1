//! gpt2 model plugin (filled in by the LM-plugins issue).
