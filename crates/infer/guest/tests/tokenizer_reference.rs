//! The tokenizer against Hugging Face `tokenizers` (0.22, Python): `tokenizer_cases.json` holds
//! the ids it gives for each text with a BPE built from the GGUF's own vocabulary and merges,
//! the `Digits(individual_digits) + ByteLevel` pre-tokenizer and the control tokens as special
//! tokens. Needs the model file (`scripts/fetch-model.sh`); skipped with a message without it.

use candle_core::quantized::gguf_file;
use runegrid_infer_guest::tokenizer::Tokenizer;
use std::path::PathBuf;

fn model_path() -> Option<PathBuf> {
    let path = match std::env::var_os("RUNEGRID_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../.runegrid/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    path.exists().then_some(path)
}

fn strings(v: &gguf_file::Value) -> Vec<String> {
    v.to_vec()
        .unwrap()
        .iter()
        .map(|s| s.to_string().unwrap().clone())
        .collect()
}

#[test]
fn encodes_like_hugging_face_tokenizers() {
    let Some(path) = model_path() else {
        eprintln!("skipped: no model file (run scripts/fetch-model.sh or set RUNEGRID_MODEL)");
        return;
    };
    let mut file = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let md = |k: &str| content.metadata.get(k).unwrap();
    let types: Vec<i32> = md("tokenizer.ggml.token_type")
        .to_vec()
        .unwrap()
        .iter()
        .map(|v| v.to_i32().unwrap())
        .collect();
    let tok = Tokenizer::new(
        strings(md("tokenizer.ggml.tokens")),
        &types,
        &strings(md("tokenizer.ggml.merges")),
    )
    .unwrap();
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("tokenizer_cases.json")).unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(text), want, "text {text:?}");
    }
    // Decoding gives the text back, less control tokens and bytes the vocabulary lacks.
    let text = "Unicode: café naïve 東京 😀 — 1,000";
    assert_eq!(tok.decode(&tok.encode(text)), text);
}
