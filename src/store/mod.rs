//! Saved images: output naming, atomic writes, PNG text chunks (A1111 `parameters` and a JSON scheme), the daily `log.html`, history listing.
