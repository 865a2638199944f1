//! llama model plugin (filled in by the LM-plugins issue).
