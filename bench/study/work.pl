# One user's Perl process in bench/study: load a set of core modules, hold
# some heap, say ready, then wait to be measured.
#   perl work.pl DIR [full|small]      (writes DIR/perl.ready; small: a third of the hash)
use strict;
use warnings;
use POSIX ();
use Data::Dumper;
use Storable qw(freeze thaw);
use List::Util qw(sum max);
use Scalar::Util qw(blessed);
use File::Find;
use File::Temp;
use File::Spec;
use Getopt::Long;
use Time::HiRes;
use IO::Socket::UNIX;
use Encode;
use Digest::MD5 qw(md5_hex);
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use Text::Wrap;
use MIME::Base64;
use Socket;

my $dir = shift or die "usage: work.pl DIR [full|small]\n";
my $keys = (shift // "full") eq "small" ? 2000 : 6000;
my %h = map { ("key$_" => { n => $_, s => "value-$_" x 3 }) } 1 .. $keys;
my $frozen = freeze(\%h);
my $json = JSON::PP->new->canonical->encode({ map { ($_ => $h{$_}{n}) } keys %h });
open(my $f, '>', "$dir/perl.ready") or die "$dir/perl.ready: $!\n";
print $f scalar(keys %h), " keys, ", length($frozen), " bytes frozen\n";
close($f);
sleep 3600 while 1;
