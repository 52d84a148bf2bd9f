//! `infer [--model PATH]`: reads a JSON request on stdin, streams the answer to stdout and a
//! JSON summary line to stderr. Exit code 0 on success, 1 on a bad request, 2 on a model or
//! output error. The model path on the command line overrides the request's.

use runegrid_infer_guest::{DEFAULT_MODEL_PATH, InferError, Model, Request};
use std::io::{BufReader, Read};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("infer: {e}");
            ExitCode::from(match e {
                InferError::Request(_) => 1,
                _ => 2,
            })
        }
    }
}

fn run() -> Result<(), InferError> {
    let mut model_arg = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--model" => model_arg = args.next(),
            other => return Err(InferError::Request(format!("unknown argument {other:?}"))),
        }
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| InferError::Request(format!("cannot read stdin: {e}")))?;
    let req: Request =
        serde_json::from_str(&input).map_err(|e| InferError::Request(e.to_string()))?;
    let path = model_arg
        .or_else(|| req.model.clone())
        .unwrap_or_else(|| DEFAULT_MODEL_PATH.to_owned());
    let file = std::fs::File::open(&path).map_err(|source| InferError::Open {
        path: path.clone(),
        source,
    })?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut model = Model::load(&mut reader)?;
    let mut stdout = std::io::stdout().lock();
    let summary = model.generate(&req, &mut stdout)?;
    eprintln!(
        "{}",
        serde_json::to_string(&summary).unwrap_or_else(|_| String::from("{}"))
    );
    Ok(())
}
