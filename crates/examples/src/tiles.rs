//! Tiling for the `render` guest: split an image into tiles, build each tile's arguments,
//! read the PPM a tile comes back as, and assemble the tiles into one PNG.

use std::fmt;

/// A rectangle of pixels of the full image: top left corner (`x`, `y`), size `w`×`h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tile {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{} tile at ({}, {})", self.w, self.h, self.x, self.y)
    }
}

/// Why tiles could not be read or assembled.
#[derive(Debug, thiserror::Error)]
pub enum TileError {
    /// The bytes do not start with the binary PPM magic `P6`.
    #[error("not a binary ppm image (no P6 magic)")]
    NotPpm,
    /// The PPM header is cut short or holds something else than a number.
    #[error("malformed ppm header: {0}")]
    BadHeader(&'static str),
    /// The PPM uses a sample range other than 0..=255.
    #[error("unsupported ppm max value {0}, only 255 is supported")]
    UnsupportedMaxValue(u32),
    /// The pixel data does not have the size the header announces.
    #[error("rgb data has {got} bytes, expected {expected}")]
    DataLength { expected: usize, got: usize },
    /// The image has no pixels, or too many to hold in memory.
    #[error("image size {width}x{height} is not supported")]
    ImageSize { width: u32, height: u32 },
    /// A tile is empty or reaches outside the image.
    #[error("{tile} is empty or not inside the {width}x{height} image")]
    OutOfBounds { tile: Tile, width: u32, height: u32 },
    /// Two tiles cover the same pixel.
    #[error("pixel ({x}, {y}) is covered by more than one tile")]
    Overlap { x: u32, y: u32 },
    /// No tile covers a pixel.
    #[error("pixel ({x}, {y}) is not covered by any tile")]
    Uncovered { x: u32, y: u32 },
    /// The PNG encoder failed.
    #[error("png encoding failed: {0}")]
    Png(#[from] png::EncodingError),
}

/// Splits a `width`×`height` image into tiles of at most `tile`×`tile` pixels, row by row;
/// the tiles of the last column and row are narrower or shorter when the size does not
/// divide evenly. Every pixel is in exactly one tile. A `tile` of 0 counts as 1; an empty
/// image has no tiles.
pub fn plan(width: u32, height: u32, tile: u32) -> Vec<Tile> {
    let tile = tile.max(1);
    let mut tiles = Vec::new();
    for y in (0..height).step_by(tile as usize) {
        let h = tile.min(height - y);
        for x in (0..width).step_by(tile as usize) {
            let w = tile.min(width - x);
            tiles.push(Tile { x, y, w, h });
        }
    }
    tiles
}

/// Arguments of the `render` guest for `tile` of a `width`×`height` image (without
/// `argv[0]`): `WIDTH HEIGHT TILE_X TILE_Y TILE_W TILE_H MAX_ITER`.
pub fn args(width: u32, height: u32, tile: &Tile, max_iter: u32) -> Vec<String> {
    [width, height, tile.x, tile.y, tile.w, tile.h, max_iter]
        .iter()
        .map(u32::to_string)
        .collect()
}

/// Reads a binary PPM (`P6`, max value 255, comments allowed in the header) into its width,
/// height and RGB bytes (row by row, 3 bytes a pixel). The data must be exactly
/// `3 × width × height` bytes.
pub fn parse_ppm(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), TileError> {
    let rest = bytes.strip_prefix(b"P6").ok_or(TileError::NotPpm)?;
    let mut header = Header {
        bytes: rest,
        pos: 0,
    };
    let width = header.number("width")?;
    let height = header.number("height")?;
    let max = header.number("max value")?;
    if max != 255 {
        return Err(TileError::UnsupportedMaxValue(max));
    }
    // Exactly one whitespace byte separates the header from the data.
    match header.bytes.get(header.pos) {
        Some(b) if b.is_ascii_whitespace() => header.pos += 1,
        _ => return Err(TileError::BadHeader("no whitespace after the max value")),
    }
    let data = &header.bytes[header.pos..];
    let expected = rgb_len(width, height).ok_or(TileError::ImageSize { width, height })?;
    if data.len() != expected {
        return Err(TileError::DataLength {
            expected,
            got: data.len(),
        });
    }
    Ok((width, height, data.to_vec()))
}

/// Puts tiles (each with its RGB bytes, as [`parse_ppm`] returns them) together into a
/// `width`×`height` RGB PNG. The tiles must cover the image exactly once, in any order.
pub fn assemble_png(
    width: u32,
    height: u32,
    tiles: &[(Tile, Vec<u8>)],
) -> Result<Vec<u8>, TileError> {
    let size = rgb_len(width, height)
        .filter(|&n| n > 0)
        .ok_or(TileError::ImageSize { width, height })?;
    let mut canvas = vec![0u8; size];
    let mut covered = vec![false; size / 3];
    let row_bytes = 3 * width as usize;
    for (tile, rgb) in tiles {
        let inside = tile.w > 0
            && tile.h > 0
            && u64::from(tile.x) + u64::from(tile.w) <= u64::from(width)
            && u64::from(tile.y) + u64::from(tile.h) <= u64::from(height);
        if !inside {
            return Err(TileError::OutOfBounds {
                tile: *tile,
                width,
                height,
            });
        }
        let tile_row = 3 * tile.w as usize;
        let expected = tile_row * tile.h as usize;
        if rgb.len() != expected {
            return Err(TileError::DataLength {
                expected,
                got: rgb.len(),
            });
        }
        for (dy, src) in rgb.chunks_exact(tile_row).enumerate() {
            let y = tile.y as usize + dy;
            let first = y * width as usize + tile.x as usize;
            let flags = &mut covered[first..first + tile.w as usize];
            if let Some(dx) = flags.iter().position(|&c| c) {
                return Err(TileError::Overlap {
                    x: tile.x + dx as u32,
                    y: y as u32,
                });
            }
            flags.fill(true);
            let start = y * row_bytes + 3 * tile.x as usize;
            canvas[start..start + tile_row].copy_from_slice(src);
        }
    }
    if let Some(i) = covered.iter().position(|&c| !c) {
        let (x, y) = (i % width as usize, i / width as usize);
        return Err(TileError::Uncovered {
            x: x as u32,
            y: y as u32,
        });
    }
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&canvas)?;
    writer.finish()?;
    Ok(png_bytes)
}

/// Bytes of RGB data of a `width`×`height` image, if that fits in memory.
fn rgb_len(width: u32, height: u32) -> Option<usize> {
    usize::try_from(u64::from(width) * u64::from(height))
        .ok()?
        .checked_mul(3)
}

/// Cursor over the text part of a PPM header.
struct Header<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Header<'_> {
    /// Skips whitespace and comments, then reads a decimal number.
    fn number(&mut self, what: &'static str) -> Result<u32, TileError> {
        loop {
            match self.bytes.get(self.pos) {
                Some(b) if b.is_ascii_whitespace() => self.pos += 1,
                Some(b'#') => {
                    while self
                        .bytes
                        .get(self.pos)
                        .is_some_and(|&b| b != b'\n' && b != b'\r')
                    {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(TileError::BadHeader(what));
        }
        std::str::from_utf8(&self.bytes[start..self.pos])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(TileError::BadHeader(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ppm(w: u32, h: u32, rgb: &[u8]) -> Vec<u8> {
        let mut bytes = format!("P6\n{w} {h}\n255\n").into_bytes();
        bytes.extend_from_slice(rgb);
        bytes
    }

    /// RGB bytes of the whole test image: each pixel encodes its coordinates.
    fn pixel(x: u32, y: u32) -> [u8; 3] {
        [x as u8, y as u8, (x * 7 + y * 13) as u8]
    }

    fn tile_rgb(t: &Tile) -> Vec<u8> {
        (t.y..t.y + t.h)
            .flat_map(|y| (t.x..t.x + t.w).flat_map(move |x| pixel(x, y)))
            .collect()
    }

    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    #[test]
    fn plan_covers_every_pixel_exactly_once() {
        for (width, height, tile) in [
            (1, 1, 1),
            (10, 7, 3),
            (64, 64, 16),
            (65, 17, 16),
            (5, 9, 100),
            (3, 3, 0),
        ] {
            let tiles = plan(width, height, tile);
            let mut hits = vec![0u32; (width * height) as usize];
            for t in &tiles {
                assert!(
                    t.w >= 1 && t.h >= 1 && t.w <= tile.max(1) && t.h <= tile.max(1),
                    "{t}"
                );
                for y in t.y..t.y + t.h {
                    for x in t.x..t.x + t.w {
                        hits[(y * width + x) as usize] += 1;
                    }
                }
            }
            assert!(hits.iter().all(|&n| n == 1), "{width}x{height} by {tile}");
        }
        assert!(plan(0, 10, 4).is_empty());
        assert!(plan(10, 0, 4).is_empty());
    }

    #[test]
    fn plan_is_row_major_with_short_edges() {
        let tiles = plan(5, 3, 2);
        let expected = [
            (0, 0, 2, 2),
            (2, 0, 2, 2),
            (4, 0, 1, 2),
            (0, 2, 2, 1),
            (2, 2, 2, 1),
            (4, 2, 1, 1),
        ];
        let got: Vec<_> = tiles.iter().map(|t| (t.x, t.y, t.w, t.h)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn args_match_render_usage() {
        let t = Tile {
            x: 16,
            y: 32,
            w: 8,
            h: 4,
        };
        assert_eq!(
            args(640, 480, &t, 300),
            ["640", "480", "16", "32", "8", "4", "300"]
        );
    }

    #[test]
    fn parse_ppm_reads_header_and_data() {
        let rgb: Vec<u8> = (0..18).collect();
        assert_eq!(parse_ppm(&ppm(3, 2, &rgb)).unwrap(), (3, 2, rgb.clone()));
        let mut commented = b"P6 # made by hand\n3\t2 # size\n255 ".to_vec();
        commented.extend_from_slice(&rgb);
        assert_eq!(parse_ppm(&commented).unwrap(), (3, 2, rgb));
        // Data may start with a whitespace byte value.
        assert_eq!(
            parse_ppm(&ppm(1, 1, b"\n\n\n")).unwrap(),
            (1, 1, b"\n\n\n".to_vec())
        );
    }

    #[test]
    fn parse_ppm_rejects_bad_input() {
        assert!(matches!(parse_ppm(b""), Err(TileError::NotPpm)));
        assert!(matches!(
            parse_ppm(b"P3\n1 1\n255\n0 0 0"),
            Err(TileError::NotPpm)
        ));
        assert!(matches!(
            parse_ppm(b"P6\n"),
            Err(TileError::BadHeader("width"))
        ));
        assert!(matches!(
            parse_ppm(b"P6\n2 x\n255\n"),
            Err(TileError::BadHeader("height"))
        ));
        assert!(matches!(
            parse_ppm(b"P6\n1 1\n"),
            Err(TileError::BadHeader("max value"))
        ));
        assert!(matches!(
            parse_ppm(b"P6\n1 1\n255"),
            Err(TileError::BadHeader(_))
        ));
        assert!(matches!(
            parse_ppm(b"P6\n99999999999 1\n255\n"),
            Err(TileError::BadHeader("width"))
        ));
        assert!(matches!(
            parse_ppm(b"P6\n1 1\n65535\n"),
            Err(TileError::UnsupportedMaxValue(65535))
        ));
        assert!(matches!(
            parse_ppm(&ppm(2, 2, &[0; 11])),
            Err(TileError::DataLength {
                expected: 12,
                got: 11
            })
        ));
        assert!(matches!(
            parse_ppm(&ppm(2, 2, &[0; 13])),
            Err(TileError::DataLength {
                expected: 12,
                got: 13
            })
        ));
    }

    #[test]
    fn assemble_puts_tiles_in_place() {
        let (width, height) = (21, 13);
        let mut tiles: Vec<(Tile, Vec<u8>)> = plan(width, height, 5)
            .iter()
            .map(|t| (*t, tile_rgb(t)))
            .collect();
        tiles.reverse(); // order does not matter
        let (w, h, rgb) = decode(&assemble_png(width, height, &tiles).unwrap());
        assert_eq!((w, h), (width, height));
        assert_eq!(
            rgb,
            tile_rgb(&Tile {
                x: 0,
                y: 0,
                w: width,
                h: height
            })
        );
    }

    #[test]
    fn assemble_round_trips_through_ppm() {
        let t = Tile {
            x: 0,
            y: 0,
            w: 4,
            h: 3,
        };
        let (w, h, rgb) = parse_ppm(&ppm(4, 3, &tile_rgb(&t))).unwrap();
        assert_eq!((w, h), (t.w, t.h));
        let png_bytes = assemble_png(4, 3, &[(t, rgb.clone())]).unwrap();
        assert_eq!(decode(&png_bytes), (4, 3, rgb));
    }

    #[test]
    fn assemble_rejects_bad_tiles() {
        let full = Tile {
            x: 0,
            y: 0,
            w: 4,
            h: 4,
        };
        let half = Tile {
            x: 0,
            y: 0,
            w: 4,
            h: 2,
        };
        let outside = Tile {
            x: 2,
            y: 0,
            w: 4,
            h: 4,
        };
        let empty = Tile {
            x: 0,
            y: 0,
            w: 0,
            h: 4,
        };
        assert!(matches!(
            assemble_png(0, 4, &[]),
            Err(TileError::ImageSize { .. })
        ));
        assert!(matches!(
            assemble_png(4, 4, &[(outside, tile_rgb(&outside))]),
            Err(TileError::OutOfBounds { .. })
        ));
        assert!(matches!(
            assemble_png(4, 4, &[(empty, Vec::new())]),
            Err(TileError::OutOfBounds { .. })
        ));
        assert!(matches!(
            assemble_png(4, 4, &[(full, vec![0; 47])]),
            Err(TileError::DataLength {
                expected: 48,
                got: 47
            })
        ));
        assert!(matches!(
            assemble_png(4, 4, &[(half, tile_rgb(&half))]),
            Err(TileError::Uncovered { x: 0, y: 2 })
        ));
        assert!(matches!(
            assemble_png(4, 4, &[(full, tile_rgb(&full)), (half, tile_rgb(&half))]),
            Err(TileError::Overlap { x: 0, y: 0 })
        ));
    }
}
