//! `pdctl`: the PD admin CLI. The program lives in `kura_pd::pdctl` so that
//! `kura pdctl …` runs the very same code.

fn main() {
    std::process::exit(kura_pd::pdctl_main(std::env::args().collect()));
}
