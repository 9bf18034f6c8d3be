//! `portcullis rules` end to end (filled in with the rules engine).
