#!/bin/sh
# When a libFuzzer log last grew its coverage: "<target> last cov increase at exec N of M (cov C)".
awk -v t="$1" '/^#[0-9]+/ { n=substr($1,2); for(i=1;i<=NF;i++) if($i=="cov:") c=$(i+1);
  if (c>best) { best=c; at=n } ; last=n }
  END { printf "%s last cov increase at exec %s of %s (cov %s)\n", t, at, last, best }' "$2"
