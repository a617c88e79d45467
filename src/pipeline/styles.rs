//! Prompt styles: the style library in `styles/*.json` and how selected styles turn a prompt into positive and negative lines.
